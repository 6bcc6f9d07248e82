"""Architectures. Importing this package registers every built-in one in :data:`ARCHITECTURES`."""

from polytask.models import hard, prefix
from polytask.models.base import ARCHITECTURES, MultiTaskModel

__all__ = ["ARCHITECTURES", "MultiTaskModel", "hard", "prefix"]
