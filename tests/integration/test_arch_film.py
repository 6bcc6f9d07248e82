"""``film`` on the bundled pretrained encoder and real demo data (see test_arch_task_embedding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_arch_task_embedding import needs_real, real_run

pytestmark = pytest.mark.integration


@needs_real
def test_film_on_the_real_encoder(tmp_path: Path) -> None:
    real_run(tmp_path, "film")
