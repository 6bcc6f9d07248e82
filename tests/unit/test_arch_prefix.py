"""Prefix tuning (architecture ``prefix``): exact attention with per-row task prefixes, frozen
encoder, parameter accounting, training on the demo with every sampler and objective, reload."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from polytask.config.run import load_config
from polytask.data import bundled
from polytask.errors import ConfigError
from polytask.models.prefix import PrefixTuning
from polytask.predict.predictor import Predictor
from polytask.samplers import SAMPLERS, build_sampler
from polytask.segments import Segment
from polytask.tasks import TaskSpec
from polytask.train import build, train
from polytask.training.params import count_parameters
from polytask.training.runlog import read_records
from tests.conftest import base_config
from tests.unit.test_cli import assert_user_error, polytask, write_config

SPECS = [
    TaskSpec("a", "classification", ["x", "y", "z"]),
    TaskSpec("b", "tagging", ["O", "B-loc"]),
]
demo_ready = pytest.mark.skipif(
    not all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED),
    reason="bundled data not prepared (`polytask data prepare`)",
)


def model(encoder: Path, **kwargs: Any) -> PrefixTuning:
    torch.manual_seed(0)
    m = PrefixTuning(AutoModel.from_pretrained(str(encoder)), SPECS, **kwargs)
    with torch.no_grad():  # far from the init, so a wrong layer or row would show
        for prefix in m.prefixes.values():
            for p in prefix.parameters():
                p.normal_()
    return m.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return ids, mask


def encoder_states(m: PrefixTuning, *args: Any) -> torch.Tensor:
    seen: dict[str, torch.Tensor] = {}
    hook = m.encoder.register_forward_hook(lambda *a: seen.update(h=a[2].last_hidden_state))
    with torch.no_grad():
        m(*args)
    hook.remove()
    return seen["h"]


def reference(m: PrefixTuning, ids: torch.Tensor, mask: torch.Tensor, tasks: list[str]) -> Any:
    """BERT by hand, eager attention over ``[prefix; tokens]`` (Li & Liang 2021, eq. 2)."""
    enc = m.encoder
    h = enc.embeddings(input_ids=ids)
    B, L, H = h.shape
    tables = [m.prefixes[t]() for t in tasks]  # per row: [layers, 2, P, hidden]
    for i, layer in enumerate(enc.encoder.layer):
        sa = layer.attention.self
        heads, d = sa.num_attention_heads, sa.attention_head_size

        def split(x: torch.Tensor, heads: int = heads, d: int = d) -> torch.Tensor:
            return x.reshape(B, -1, heads, d).transpose(1, 2)

        q = split(sa.query(h))
        k = torch.cat([split(torch.stack([t[i, 0] for t in tables])), split(sa.key(h))], 2)
        v = torch.cat([split(torch.stack([t[i, 1] for t in tables])), split(sa.value(h))], 2)
        seen = torch.cat([torch.ones(B, k.shape[2] - L), mask.float()], 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) - 1e9 * (1 - seen)[:, None, None, :]
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H)
        a = layer.attention.output(ctx, h)
        h = layer.output(layer.intermediate(a), a)
    return h


@pytest.mark.parametrize("reparameterize", [None, 8])
def test_mixed_batch_matches_hand_written_attention(
    tiny_encoder: Path, reparameterize: int | None
) -> None:
    m = model(tiny_encoder, prefix_length=3, reparameterize=reparameterize)
    ids, mask = batch()
    got = encoder_states(m, ids, mask, None, [Segment("a", 0, 2), Segment("b", 2, 5)])
    with torch.no_grad():
        want = reference(m, ids, mask, ["a", "a", "b", "b", "b"])
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-5
    # and the prefix matters: task a's prefix on b's rows gives other states
    with torch.no_grad():
        other = reference(m, ids, mask, ["a"] * 5)
    assert (got - other)[2:][real[2:]].abs().max() > 1e-2


def test_rows_of_a_task_do_not_depend_on_the_other_tasks_rows(tiny_encoder: Path) -> None:
    m = model(tiny_encoder, prefix_length=4)
    ids, mask = batch()
    mixed = encoder_states(m, ids, mask, None, [Segment("a", 0, 2), Segment("b", 2, 5)])
    alone = encoder_states(m, ids[2:], mask[2:], None, [Segment("b", 0, 3)])
    assert (mixed[2:] - alone)[mask[2:].bool()].abs().max() < 1e-5
    # single-input layout (both tasks read every row): one forward per task, same answers
    with torch.no_grad():
        both = m(ids, mask, None, [Segment("a", 0, 5), Segment("b", 0, 5)])
        only_b = m(ids, mask, None, [Segment("b", 0, 5)])
    assert torch.allclose(both["b"], only_b["b"], atol=1e-6)


def test_init_is_real_token_activations_and_encoder_is_frozen(tiny_encoder: Path) -> None:
    torch.manual_seed(0)
    m = PrefixTuning(AutoModel.from_pretrained(str(tiny_encoder)), SPECS, prefix_length=5)
    table = m.prefixes["a"].table
    assert table is not None and table.shape == (2, 2, 5, 32)
    # layer 0's keys and values are those of single vocabulary tokens at positions 0..P-1
    enc = m.encoder.eval()
    vocab = enc.config.vocab_size
    ids = torch.arange(vocab)[:, None].expand(vocab, 5)
    with torch.no_grad():
        states = enc.embeddings(input_ids=ids)  # [V, P, hidden]
        attention = enc.encoder.layer[0].attention.self
        for kv, proj in enumerate((attention.key, attention.value)):
            candidates = proj(states)
            gap = (candidates - table[0, kv][None]).abs().amax(-1).amin(0)  # best token per p
            assert gap.max() < 1e-5, gap
    assert not torch.equal(m.prefixes["a"].table, m.prefixes["b"].table)
    assert not any(p.requires_grad for p in m.encoder.parameters())
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names == {n for t in ("a", "b") for n, _ in m.task_parameters(t)}


@pytest.mark.parametrize("reparameterize", [None, 8])
def test_parameter_accounting_matches_hand_count(
    tiny_encoder: Path, reparameterize: int | None
) -> None:
    m = model(tiny_encoder, prefix_length=3, reparameterize=reparameterize)
    vocab, hidden, ffn, layers, positions, P = m.encoder.config.vocab_size, 32, 64, 2, 128, 3
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden * ffn + ffn + hidden + 2 * 2 * hidden
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    encoder = embeddings + layers * layer + hidden * hidden + hidden  # + pooler
    if reparameterize is None:
        prefix = layers * 2 * P * hidden
    else:
        r = reparameterize
        prefix = P * hidden + hidden * r + r + r * 2 * layers * hidden + 2 * layers * hidden
    inner = hidden // 2
    head = {t: hidden * inner + inner + inner * n + n for t, n in (("a", 3), ("b", 2))}
    counts = count_parameters(m)
    assert counts["shared"] == encoder
    assert counts["per_task"] == {t: prefix + head[t] for t in head}
    assert counts["trainable"] == sum(counts["per_task"].values())
    assert counts["total"] == encoder + counts["trainable"]
    report = m.report()["prefix"]
    assert report["trainable_per_task"] == counts["per_task"]
    assert report["prefix_parameters"] == {"a": prefix, "b": prefix}


def demo_overrides(encoder: Path, steps: int) -> list[str]:
    sizes = [
        f"tasks.{t}.data.max_{s}_examples={n}"
        for t in ("sentiment", "movies", "ner")
        for s, n in (("train", 256), ("validation", 32), ("test", 32))
    ]
    return [
        f"encoder.name={encoder}",
        "encoder.max_length=32",
        "tasks.ner.max_length=32",
        *sizes,
        "architecture.name=prefix",
        "architecture.prefix_length=4",
        f"train.max_steps={steps}",
        f"train.eval_every={steps}",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.patience=null",
    ]


STEPS = 30


def demo_run(tmp_path: Path, encoder: Path, *extra: str) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path / "run"
    train(load_config(None, [*demo_overrides(encoder, STEPS), *extra]), out, show_progress=False)
    return out, [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]


def assert_trains(records: list[dict[str, Any]], window: int = 8) -> None:
    assert len(records) == STEPS
    for r in records:
        assert all(math.isfinite(v) for v in r["loss"].values()), r
    for task in ("sentiment", "movies", "ner"):
        seen = [r["loss"][task] for r in records if task in r["loss"]]
        first, last = seen[:window], seen[-window:]
        assert sum(last) / len(last) < sum(first) / len(first), (task, first, last)


def assert_encoder_untouched(out: Path, encoder: Path) -> None:
    saved = load_file(str(out / "model" / "model.safetensors"))
    pretrained = AutoModel.from_pretrained(str(encoder)).state_dict()
    for name, value in pretrained.items():
        assert torch.equal(saved[f"encoder.{name}"], value), name


@demo_ready
@pytest.mark.usefixtures("cached_tables")  # the demo splits parsed once per worker
@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_trains_demo_with_every_sampler(tmp_path: Path, tiny_encoder: Path, sampler: str) -> None:
    """Two of the three tasks per step, picked by the configured sampler (replayed here)."""
    out, records = demo_run(
        tmp_path, tiny_encoder, f"sampler.name={sampler}", "sampler.tasks_per_step=2"
    )
    names = ["sentiment", "movies", "ner"]
    replay = build_sampler(sampler, [256, 256, 256], load_config(None).seed, {})
    expected = [[names[i] for i in replay.sample(s, STEPS, 2)] for s in range(STEPS)]
    assert [r["tasks"] for r in records] == expected
    assert all(math.isfinite(v) for r in records for v in r["loss"].values())
    assert_encoder_untouched(out, tiny_encoder)


@demo_ready
@pytest.mark.parametrize(
    ("weighting", "aggregator"), [("equal", "sum"), ("uncertainty", "sum"), ("equal", "mean")]
)
def test_trains_demo_with_weightings_and_aggregators(
    tmp_path: Path, tiny_encoder: Path, weighting: str, aggregator: str
) -> None:
    out, records = demo_run(
        tmp_path,
        tiny_encoder,
        f"weighting.name={weighting}",
        f"aggregator.name={aggregator}",
        "sampler.tasks_per_step=all",
    )
    assert_trains(records)
    assert_encoder_untouched(out, tiny_encoder)
    final = (out / "final_metrics.json").read_text()
    assert '"trainable"' in final


def test_gradient_methods_are_refused_with_a_frozen_encoder(tiny_encoder: Path) -> None:
    """A frozen encoder trains no shared parameter: pcgrad would stay the sum, GradNorm equal."""
    for method in ("aggregator.name=pcgrad", "weighting.name=gradnorm"):
        with pytest.raises(ConfigError, match="'prefix': it trains no shared parameters"):
            load_config(None, [*demo_overrides(tiny_encoder, STEPS), method])
    unfrozen = "architecture.freeze_encoder=false"
    load_config(None, [*demo_overrides(tiny_encoder, STEPS), unfrozen, "aggregator.name=pcgrad"])


@demo_ready
def test_saved_run_reloads_and_predicts_identically(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polytask.train as training

    built: list[Any] = []

    def keep(config: Any) -> Any:  # the training run's own Setup: its model after training
        built.append(build(config))
        return built[-1]

    monkeypatch.setattr(training, "build", keep)
    out = tmp_path / "run"
    config = load_config(None, [*demo_overrides(tiny_encoder, 6), "architecture.reparameterize=8"])
    train(config, out, show_progress=False)
    setup = built[0]
    in_memory = setup.model.eval()  # _finish loaded the best (saved) weights into it
    reloaded = Predictor(out)
    tokenizer = setup.tokenizer
    texts = ["what a great film", "so bad", "london and paris"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    segments = [Segment("sentiment", 0, 1), Segment("movies", 1, 2), Segment("ner", 2, 3)]
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), segments)
    with torch.no_grad():
        want = in_memory(*args)
        got = reloaded.model(*args)
    for task in want:
        assert (want[task] - got[task]).abs().max() < 1e-5, task
    assert reloaded.predict("sentiment", texts) == Predictor(out).predict("sentiment", texts)
    report = (out / "report.json").read_text()
    assert "trainable_percent_of_encoder" in report


def test_bad_prefix_config_is_one_line(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    config = write_config(tmp_path, base_config(tiny_encoder, task_files, max_steps=2))
    out = tmp_path / "run"
    result = polytask(
        "train", str(config), "-o", str(out),
        "architecture.name=prefix", "architecture.prefix_length=0",
    )  # fmt: skip
    assert_user_error(result, "architecture: prefix: prefix_length must be >= 1, got 0")
    assert not out.exists()


def test_acceptance_config_loads() -> None:
    config = load_config(str(Path(__file__).parents[2] / "configs" / "prefix-demo.yaml"), [])
    assert config.architecture.name == "prefix"
    assert config.architecture.kwargs["freeze_encoder"] is True
