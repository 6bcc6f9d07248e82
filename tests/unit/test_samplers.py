import pytest
import torch

from polytask.samplers import SAMPLERS, Annealed, build_sampler, update_counts

SIZES = [8000, 1000, 100]


def test_proportional_and_temperature_probabilities() -> None:
    prop = build_sampler("proportional", SIZES, seed=0).probabilities(0, 10)
    assert torch.allclose(prop, torch.tensor(SIZES, dtype=torch.float64) / sum(SIZES))
    temp = build_sampler("temperature", SIZES, seed=0, kwargs={"alpha": 0.5}).probabilities(0, 10)
    expected = torch.tensor(SIZES, dtype=torch.float64).sqrt()
    assert torch.allclose(temp, expected / expected.sum())
    assert temp[2] > prop[2]  # alpha < 1 lifts the small task


def test_uniform_and_round_robin_are_balanced() -> None:
    assert torch.allclose(
        build_sampler("uniform", SIZES, 0).probabilities(0, 1),
        torch.full((3,), 1 / 3, dtype=torch.float64),
    )
    counts = update_counts(build_sampler("round_robin", SIZES, 0), steps=99, k=1)
    assert counts == [33, 33, 33]
    counts = update_counts(build_sampler("round_robin", SIZES, 0), steps=30, k=2)
    assert counts == [20, 20, 20]


def test_annealed_moves_from_start_to_end() -> None:
    s = Annealed(SIZES, seed=0, alpha_start=1.0, alpha_end=0.0)
    assert torch.allclose(
        s.probabilities(0, 11), build_sampler("proportional", SIZES, 0).probabilities(0, 11)
    )
    assert torch.allclose(s.probabilities(10, 11), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert s.alpha(5, 11) == pytest.approx(0.5)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_is_seeded_and_resumable(name: str) -> None:
    a, b = build_sampler(name, SIZES, seed=3), build_sampler(name, SIZES, seed=3)
    first = [a.sample(i, 50, 1) for i in range(20)]
    assert first == [b.sample(i, 50, 1) for i in range(20)]
    state = a.state_dict()
    cont = [a.sample(i, 50, 2) for i in range(20, 40)]
    c = build_sampler(name, SIZES, seed=99)
    c.load_state_dict(state)
    assert [c.sample(i, 50, 2) for i in range(20, 40)] == cont
    for picked in cont:
        assert len(set(picked)) == 2


def test_update_counts_follow_probabilities_and_do_not_consume_rng() -> None:
    s = build_sampler("proportional", SIZES, seed=1)
    before = s.state_dict()["generator"].clone()
    counts = update_counts(s, steps=2000, k=1)
    assert torch.equal(before, s.state_dict()["generator"])
    assert counts[0] / 2000 == pytest.approx(8000 / 9100, abs=0.03)


def test_k_equal_to_t_trains_every_task() -> None:
    assert build_sampler("temperature", SIZES, 0).sample(0, 10, 3) == [0, 1, 2]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha must be > 0"):
        build_sampler("temperature", SIZES, 0, {"alpha": 0.0})
    with pytest.raises(ValueError, match="at least one training example"):
        build_sampler("uniform", [3, 0], 0)


def test_every_task_sampler_of_tasks_per_step_all() -> None:
    s = build_sampler(None, SIZES, 0)
    assert [s.sample(i, 10, 1) for i in range(3)] == [[0, 1, 2]] * 3


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_arguments_bind_to_the_constructor(name: str) -> None:
    """The config's keys are the constructor's arguments, typed by its annotations."""
    from polytask.config.run import SAMPLER_SUPPLIED
    from polytask.errors import ConfigError
    from polytask.registry import bind

    bound = bind(SAMPLERS, name, {}, "sampler", supplied=SAMPLER_SUPPLIED)
    built = build_sampler(name, SIZES, 0, bound)
    for key, value in bound.items():
        assert getattr(built, key) == value
    with pytest.raises(ConfigError, match="has no hyperparameter 'nope'"):
        bind(SAMPLERS, name, {"nope": 1}, "sampler", supplied=SAMPLER_SUPPLIED)
