"""Duration distributions of simulate tasks and the retry backoff."""

import random

import pytest

from services.task.durations import MAX_SIMULATED_S, Distribution, check_distribution
from services.task.executor import RetryPolicy


@pytest.mark.parametrize(
    ("distribution", "low", "high"),
    [
        (Distribution("fixed", (2.5,)), 2.5, 2.5),
        (Distribution("uniform", (1.0, 5.0)), 1.0, 5.0),
        (Distribution("log_normal", (2.0,), 3.0), 0.0, MAX_SIMULATED_S),
        (Distribution("trace", (0.5, 1.5, 4.0)), 0.5, 4.0),
    ],
)
def test_draw_within_bounds(distribution: Distribution, low: float, high: float) -> None:
    rng = random.Random(3)
    draws = [distribution.draw(rng) for _ in range(500)]
    assert min(draws) >= low
    assert max(draws) <= high


def test_trace_draws_recorded_values() -> None:
    rng = random.Random(3)
    trace = Distribution("trace", (0.5, 1.5, 4.0))
    assert {trace.draw(rng) for _ in range(100)} == {0.5, 1.5, 4.0}


@pytest.mark.parametrize(
    ("distribution", "field"),
    [
        (None, "d"),
        (Distribution("fixed", (-1.0,)), "d.fixed"),
        (Distribution("uniform", (3.0, 1.0)), "d.uniform.max"),
        (Distribution("uniform", (1.0, 500.0)), "d.uniform.max"),
        (Distribution("log_normal", (0.0,), 1.0), "d.log_normal.median"),
        (Distribution("log_normal", (1.0,), 4.0), "d.log_normal.sigma"),
        (Distribution("trace", ()), "d.trace.durations"),
        (Distribution("trace", (1.0, -2.0)), "d.trace.durations[1]"),
        (Distribution("", ()), "d"),
    ],
)
def test_invalid_distribution_names_field(distribution: Distribution | None, field: str) -> None:
    violations = check_distribution("d", distribution)
    assert [name for name, _ in violations] == [field]


def test_valid_distribution_passes() -> None:
    assert check_distribution("d", Distribution("uniform", (1.0, 5.0))) == []


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=1.0, backoff_cap_s=8.0)
    rng = random.Random(1)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert len(set(delays)) > 1


def test_longest_hold_counts_every_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=1.0, backoff_cap_s=30.0)
    assert policy.longest_hold_s(280.0) == 3 * 280.0 + 2 * 30.0
