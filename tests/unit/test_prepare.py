"""A finished run trained further (issue 22 item 1): which best model it goes on from."""

from __future__ import annotations

import json
from pathlib import Path

from polytask.training.prepare import adopt_saved_best
from polytask.training.state import TrainState


def saved_best(folder: Path, step: int, score: float) -> Path:
    folder.mkdir()
    (folder / "polytask.json").write_text(json.dumps({"step": step, "primary_metric": score}))
    return folder


def test_a_best_model_saved_after_the_checkpoint_stays_the_best(tmp_path: Path) -> None:
    """Checkpoint at step 6 (best 0.4 at step 6), model/ from step 9 (0.7): the steps after
    6 are trained again under the new schedule and may never reach 0.7, so the step-9
    weights stay the best, and their validation metrics are measured again at the end."""
    state = TrainState(step=6, best=0.4, best_step=6, best_validation={"sent": {"acc": 0.4}})
    adopt_saved_best(saved_best(tmp_path / "model", 9, 0.7), state)
    assert (state.best, state.best_step, state.best_validation) == (0.7, 9, None)


def test_the_checkpoints_own_best_is_kept(tmp_path: Path) -> None:
    state = TrainState(step=6, best=0.4, best_step=6, best_validation={"sent": {"acc": 0.4}})
    adopt_saved_best(saved_best(tmp_path / "model", 6, 0.4), state)
    assert (state.best, state.best_step, state.best_validation) == (0.4, 6, {"sent": {"acc": 0.4}})
    adopt_saved_best(tmp_path / "absent", state)  # no model folder: nothing to adopt
    assert state.best_step == 6
