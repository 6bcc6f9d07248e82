"""Predictions from a trained run: :class:`Predictor` (``predictor``) and the input forms it
accepts (``inputs``)."""

from polytask.predict.inputs import ALL
from polytask.predict.predictor import Job, Predictor

__all__ = ["ALL", "Job", "Predictor"]
