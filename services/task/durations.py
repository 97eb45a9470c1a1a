"""Duration distributions of ``simulate`` tasks: validation and drawing; pure code, no I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_SIMULATED_S = 240.0
"""Maximum duration of a ``simulate`` task, in seconds. Log-normal draws are cut to it."""
MAX_SIGMA = 3.0
MAX_TRACE_LENGTH = 10_000
KINDS = ("fixed", "uniform", "log_normal", "trace")


@dataclass(frozen=True)
class Distribution:
    """A distribution of durations in seconds.

    ``fixed``: ``values == (d,)``; ``uniform``: ``(min, max)``; ``log_normal``:
    ``(median,)`` with ``sigma``; ``trace``: the recorded durations.
    """

    kind: str
    values: tuple[float, ...]
    sigma: float = 0.0

    def draw(self, rng: random.Random) -> float:
        """Draw one duration in seconds, at most ``MAX_SIMULATED_S``."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1])
        if self.kind == "log_normal":
            return min(MAX_SIMULATED_S, rng.lognormvariate(math.log(self.values[0]), self.sigma))
        return rng.choice(self.values)


def check_distribution(field: str, distribution: Distribution | None) -> list[tuple[str, str]]:
    """Return the violations of ``distribution``, each naming its field under ``field``."""
    if distribution is None:
        return [(field, "is required for simulate tasks")]
    if distribution.kind not in KINDS:
        return [(field, f"unknown distribution {distribution.kind!r}")]
    violations = _check_values(f"{field}.{distribution.kind}", distribution)
    if distribution.kind == "log_normal" and not 0 <= distribution.sigma <= MAX_SIGMA:
        violations.append(
            (
                f"{field}.log_normal.sigma",
                f"must be from 0 to {MAX_SIGMA:g}, got {distribution.sigma:g}",
            )
        )
    return violations


def _check_values(field: str, distribution: Distribution) -> list[tuple[str, str]]:
    kind, values = distribution.kind, distribution.values
    if kind == "trace" and not 1 <= len(values) <= MAX_TRACE_LENGTH:
        return [
            (
                f"{field}.durations",
                f"must list 1 to {MAX_TRACE_LENGTH} durations, got {len(values)}",
            )
        ]
    names = {"uniform": ("min", "max"), "log_normal": ("median",), "fixed": ("",)}.get(kind)
    violations = []
    for index, value in enumerate(values):
        name = f"{field}.durations[{index}]" if names is None else _join(field, names[index])
        if not 0 <= value <= MAX_SIMULATED_S:
            violations.append((name, f"must be from 0 to {MAX_SIMULATED_S:g} s, got {value:g} s"))
    if kind == "uniform" and not violations and values[0] > values[1]:
        violations.append((f"{field}.max", "must not be shorter than min"))
    if kind == "log_normal" and not violations and values[0] <= 0:
        violations.append((f"{field}.median", "must be greater than 0"))
    return violations


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if name else field
