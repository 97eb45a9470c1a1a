"""Analysis and report of a failover drill: a Markdown summary, a CSV per second and a plot.

Site traffic comes from Envoy's ``upstream_rq_total`` counters of the site clusters,
sampled every few hundred milliseconds during the drill, so the times derived from them
(failover, failback) have the sampling interval as their resolution.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ops.drill_load import Outcome, WriteCheck

PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class SiteSample:
    """Cumulative counters read from Envoy at one moment of the drill."""

    t_s: float
    """Seconds since the load began."""
    calls: dict[str, int]
    """Calls sent to each site since Envoy started, summed over the services."""
    retries: int
    """Retries of every cluster since Envoy started."""


@dataclass(frozen=True)
class DrillEvents:
    """Moments of the drill in seconds since the load began."""

    fault_s: float
    """The fault injection began."""
    restore_s: float
    """The restore action began (restart, SIGCONT or shift back)."""
    recovered_s: float
    """The restored processes were ready and Envoy saw every host healthy again."""
    end_s: float
    """The load stopped starting requests."""
    shift: bool = False
    """The fault was a traffic shift, so the task workers had to change priority."""
    workers_shifted_s: float | None = None
    """Seconds from the shift until every task worker consumed with its shifted priority
    (shift drills only; None when that did not happen within the outage)."""
    workers_back_s: float | None = None
    """Seconds from the shift back until every task worker consumed with its priority for
    the restored split (shift drills only)."""


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class DrillSummary:
    """The numbers a drill report states."""

    name: str
    description: str
    rate_per_s: float
    requests: int
    failed_by_code: dict[str, int]
    retries: int
    calls_by_site: dict[str, dict[str, int]]
    """Calls per site in each phase."""
    failover_s: float | None
    """Seconds from the fault until the last call reached the failed site."""
    failback_s: float | None
    """Seconds from the restore until the last call reached the standby site."""
    return_s: float | None
    """Seconds from the restore until the first call reached the failed site again."""
    failed_latency: Latency
    latency: dict[str, Latency]
    events: DrillEvents
    writes: WriteCheck | None = None
    notes: list[str] = field(default_factory=list)
    failed_site: str | None = None
    """Site the fault takes out of service (or the shift moves traffic from)."""
    standby_site: str | None = None
    """Site that carries the traffic meanwhile."""

    @property
    def failed(self) -> int:
        return sum(self.failed_by_code.values())


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_of(outcomes: Sequence[Outcome]) -> Latency:
    values = [outcome.latency_s * 1000 for outcome in outcomes]
    return Latency(
        len(values), percentile(values, 0.5), percentile(values, 0.99), max(values, default=0.0)
    )


def phase_of(outcome: Outcome, events: DrillEvents) -> str:
    """Return the phase of a request; one still running at the fault belongs to ``during``."""
    if outcome.start_s + outcome.latency_s < events.fault_s:
        return "before"
    return "during" if outcome.start_s < events.recovered_s else "after"


def last_increase(
    samples: Sequence[SiteSample], site: str, start_s: float, end_s: float
) -> float | None:
    """Return the time of the last sample in ``(start_s, end_s]`` where ``site``'s calls grew."""
    last = None
    for previous, sample in itertools.pairwise(samples):
        if start_s < sample.t_s <= end_s and sample.calls[site] > previous.calls[site]:
            last = sample.t_s
    return last


def first_increase(samples: Sequence[SiteSample], site: str, start_s: float) -> float | None:
    """Return the time of the first sample after ``start_s`` where ``site``'s calls grew."""
    for previous, sample in itertools.pairwise(samples):
        if sample.t_s > start_s and sample.calls[site] > previous.calls[site]:
            return sample.t_s
    return None


def calls_between(samples: Sequence[SiteSample], site: str, start_s: float, end_s: float) -> int:
    """Return the calls sent to ``site`` between the samples nearest ``start_s`` and ``end_s``."""
    inside = [sample for sample in samples if start_s <= sample.t_s <= end_s]
    if len(inside) < 2:
        return 0
    return inside[-1].calls[site] - inside[0].calls[site]


def summarize(
    name: str,
    description: str,
    rate_per_s: float,
    outcomes: Sequence[Outcome],
    samples: Sequence[SiteSample],
    events: DrillEvents,
    failed_site: str | None,
    standby_site: str | None,
) -> DrillSummary:
    """Compute the drill's numbers from its requests, counter samples and events.

    ``failed_site`` is the site the fault takes out of service and ``standby_site`` the
    one that carries its traffic meanwhile; both None when no site fails over.
    """
    by_phase: dict[str, list[Outcome]] = {phase: [] for phase in PHASES}
    for outcome in outcomes:
        by_phase[phase_of(outcome, events)].append(outcome)
    bounds = {
        "before": (0.0, events.fault_s),
        "during": (events.fault_s, events.recovered_s),
        "after": (events.recovered_s, events.end_s + 60.0),
    }
    sites = list(samples[0].calls) if samples else []
    calls_by_site = {
        phase: {site: calls_between(samples, site, *bounds[phase]) for site in sites}
        for phase in PHASES
    }
    failover_s = failback_s = return_s = None
    if failed_site is not None and standby_site is not None:
        last_failed = last_increase(samples, failed_site, events.fault_s, events.restore_s)
        failover_s = 0.0 if last_failed is None else last_failed - events.fault_s
        last_standby = last_increase(samples, standby_site, events.restore_s, math.inf)
        failback_s = 0.0 if last_standby is None else last_standby - events.restore_s
        first_back = first_increase(samples, failed_site, events.restore_s)
        return_s = None if first_back is None else first_back - events.restore_s
    retries = samples[-1].retries - samples[0].retries if samples else 0
    return DrillSummary(
        name=name,
        description=description,
        rate_per_s=rate_per_s,
        requests=len(outcomes),
        failed_by_code=dict(Counter(o.code for o in outcomes if not o.ok).most_common()),
        retries=retries,
        calls_by_site=calls_by_site,
        failover_s=failover_s,
        failback_s=failback_s,
        return_s=return_s,
        failed_latency=latency_of([outcome for outcome in outcomes if not outcome.ok]),
        latency={phase: latency_of(by_phase[phase]) for phase in PHASES},
        events=events,
        failed_site=failed_site,
        standby_site=standby_site,
    )


def per_second(
    outcomes: Sequence[Outcome], samples: Sequence[SiteSample]
) -> list[dict[str, float]]:
    """Return one row per second of the load: requests started, failures, p99 and site calls."""
    seconds = int(max((o.start_s for o in outcomes), default=0.0)) + 1
    rows: list[dict[str, float]] = []
    for second in range(seconds):
        started = [o for o in outcomes if second <= o.start_s < second + 1]
        row: dict[str, float] = {
            "second": second,
            "requests": len(started),
            "failed": sum(1 for o in started if not o.ok),
            "p99_ms": round(latency_of(started).p99_ms, 1),
        }
        for site in samples[0].calls if samples else []:
            row[f"{site}_calls"] = calls_between(samples, site, second, second + 1)
        rows.append(row)
    return rows


def _failed_latency(summary: DrillSummary) -> str:
    if not sum(summary.failed_by_code.values()):
        return "n/a (none failed)"
    latency = summary.failed_latency
    return f"{latency.p99_ms:.1f} ms / {latency.max_ms:.1f} ms"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def render_markdown(summary: DrillSummary, rows: Sequence[dict[str, float]]) -> str:
    """Return the Markdown report of a drill."""
    events = summary.events
    failed = ", ".join(f"{code}: {count}" for code, count in summary.failed_by_code.items())
    failed_site = summary.failed_site or "failed"
    standby_site = summary.standby_site or "standby"
    lines = [
        f"# Drill `{summary.name}`",
        "",
        summary.description,
        "",
        "| measure | value |",
        "|---|---|",
        f"| request rate | {summary.rate_per_s:g} requests/s (HTTP facade and gRPC) |",
        f"| requests sent | {summary.requests} |",
        f"| failed requests | {summary.failed} ({failed or 'none'}) |",
        f"| retries by Envoy | {summary.retries} |",
        f"| time until all traffic left the {failed_site} site | {_seconds(summary.failover_s)} |",
        f"| first call back on the {failed_site} site after the restore | "
        f"{_seconds(summary.return_s)} |",
        f"| failback time (restore to last call on the {standby_site} site) | "
        f"{_seconds(summary.failback_s)} |",
        f"| latency of failed requests p99 / max | {_failed_latency(summary)} |",
        f"| fault at / restore at / recovered at | {events.fault_s:.2f} s / "
        f"{events.restore_s:.2f} s / {events.recovered_s:.2f} s |",
    ]
    if events.shift:
        lines.append(
            "| task workers on their new consumer priority after the shift / the shift back | "
            f"{_seconds(events.workers_shifted_s)} / {_seconds(events.workers_back_s)} |"
        )
    if summary.writes is not None:
        writes = summary.writes
        lines.append(
            f"| accepted writes checked | {writes.checked} shipments: {len(writes.missing)} "
            f"missing, {len(writes.duplicated)} applied twice, {len(writes.unapplied)} unapplied |"
        )
    lines += [
        "",
        f"Phases: before runs until the fault ({events.fault_s:.2f} s), during from the fault "
        f"until the restored processes were ready ({events.recovered_s:.2f} s), and after "
        "from then on.",
        "",
        "| phase | requests | p50 ms | p99 ms | max ms | calls per site |",
        "|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        latency = summary.latency[phase]
        sites = ", ".join(f"{site} {count}" for site, count in summary.calls_by_site[phase].items())
        lines.append(
            f"| {phase} | {latency.count} | {latency.p50_ms:.1f} | {latency.p99_ms:.1f} | "
            f"{latency.max_ms:.1f} | {sites} |"
        )
    lines += [""] + [f"- {note}" for note in summary.notes]
    lines += ["", "![timeline](timeline.png)", "", "Per second: `per_second.csv`.", ""]
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, summary: DrillSummary, rows: Sequence[dict[str, float]]) -> None:
    """Draw calls per second per site, failed requests and p99 latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    seconds = [row["second"] for row in rows]
    figure, (traffic, errors, latency) = pyplot.subplots(3, 1, sharex=True, figsize=(10, 8))
    sites = [
        key.removesuffix("_calls") for key in (rows[0] if rows else {}) if key.endswith("_calls")
    ]
    for site in sites:
        traffic.plot(seconds, [row[f"{site}_calls"] for row in rows], label=f"{site} site")
    traffic.set_ylabel("upstream calls/s")
    traffic.legend(loc="upper right")
    errors.bar(seconds, [row["failed"] for row in rows], color="tab:red", width=0.8)
    errors.set_ylabel("failed requests/s")
    latency.plot(seconds, [row["p99_ms"] for row in rows], color="tab:purple")
    latency.set_ylabel("p99 latency (ms)")
    latency.set_xlabel("seconds since the load began")
    events = summary.events
    for axis in (traffic, errors, latency):
        axis.axvline(events.fault_s, color="black", linestyle="--", linewidth=1)
        axis.axvline(events.restore_s, color="green", linestyle="--", linewidth=1)
        axis.axvline(events.recovered_s, color="grey", linestyle=":", linewidth=1)
    errors.set_ylim(bottom=0)
    traffic.set_title(f"drill {summary.name}: fault (black), restore (green), recovered (grey)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_report(
    directory: Path,
    summary: DrillSummary,
    outcomes: Sequence[Outcome],
    samples: Sequence[SiteSample],
) -> Path:
    """Write ``report.md``, ``per_second.csv`` and ``timeline.png``; return the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = per_second(outcomes, samples)
    write_csv(directory / "per_second.csv", rows)
    plot(directory / "timeline.png", summary, rows)
    report = directory / "report.md"
    report.write_text(render_markdown(summary, rows), encoding="utf-8")
    return report
