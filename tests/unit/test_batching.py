import random

import torch

from polytask.data.batching import TaskStream, bucketed_batches, collate, eval_batches
from polytask.tasks import TaskSpec


def test_bucketed_epoch_covers_every_example_once_and_pads_less() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(4, 128) for _ in range(1000)]
    batches = bucketed_batches(
        lengths, batch_size=16, bucket_batches=10, generator=torch.Generator().manual_seed(0)
    )
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))

    def padded(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in bs)

    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    plain = [shuffled[i : i + 16] for i in range(0, 1000, 16)]
    assert padded(batches) < 0.7 * padded(plain)


def test_eval_batches_sorted_once() -> None:
    lengths = [5, 1, 3, 2, 4]
    batches = list(eval_batches(lengths, 2))
    assert [i for b in batches for i in b] == [1, 3, 2, 4, 0]


class _FakeDataset:
    def __init__(self, n: int) -> None:
        self.rows = [
            {"input_ids": [2] + [7] * (i % 5 + 1) + [3], "target": i % 3, "length": i % 5 + 3}
            for i in range(n)
        ]

    def __getitem__(self, key: object) -> object:
        if key == "length":
            return [r["length"] for r in self.rows]
        assert isinstance(key, list)
        return {k: [self.rows[i][k] for i in key] for k in ("input_ids", "target", "length")}

    def __len__(self) -> int:
        return len(self.rows)


def test_stream_resumes_exactly_across_epochs() -> None:
    a = TaskStream(_FakeDataset(50), batch_size=8, bucket_batches=2, seed=4)  # type: ignore[arg-type]
    for _ in range(9):  # crosses the first epoch boundary (7 batches)
        a.next_indices()
    state = a.state_dict()
    expected = [a.next_indices() for _ in range(10)]
    b = TaskStream(_FakeDataset(50), batch_size=8, bucket_batches=2, seed=4)  # type: ignore[arg-type]
    b.load_state_dict(state)
    assert [b.next_indices() for _ in range(10)] == expected
    assert state["epoch"] == 1


def test_collate_pads_with_pad_id_and_marks_segments() -> None:
    spec_a = TaskSpec(name="a", type="classification", labels=["x", "y", "z"])
    spec_b = TaskSpec(name="b", type="regression")
    rows_a = {"input_ids": [[2, 5, 3], [2, 3]], "target": [1, None]}
    rows_b = {"input_ids": [[2, 6, 6, 6, 3]], "target": [0.5]}
    batch = collate([(spec_a, rows_a), (spec_b, rows_b)], pad_id=9)
    assert batch.input_ids.tolist() == [[2, 5, 3, 9, 9], [2, 3, 9, 9, 9], [2, 6, 6, 6, 3]]
    assert batch.attention_mask.sum(1).tolist() == [3, 2, 5]
    assert [(s.task, s.start, s.stop) for s in batch.segments] == [("a", 0, 2), ("b", 2, 3)]
    assert batch.labels["a"].tolist() == [1, -100]
    assert batch.labels["b"].tolist() == [0.5]
