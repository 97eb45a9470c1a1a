"""Tests of the drill analysis on synthetic requests and counter samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ops.drill_load import Outcome
from ops.drill_report import (
    DrillEvents,
    SiteSample,
    percentile,
    render_markdown,
    summarize,
    write_report,
)

EVENTS = DrillEvents(fault_s=2.0, restore_s=5.0, recovered_s=6.0, end_s=8.0)


def samples() -> list[SiteSample]:
    """Primary until 2.2 s, secondary from 2.2 s to 6.4 s, primary again from 5.6 s."""
    result = []
    primary = secondary = 0
    for tenth in range(0, 81, 2):
        t_s = tenth / 10
        if t_s <= 2.2 or t_s >= 5.6:
            primary += 5
        if 2.2 <= t_s <= 6.4:
            secondary += 5
        result.append(SiteSample(t_s, {"primary": primary, "secondary": secondary}, tenth))
    return result


def outcomes() -> list[Outcome]:
    result = [Outcome(i / 10, 0.01, "http:get", "OK") for i in range(80)]
    result.append(Outcome(1.9, 2.0, "grpc:get", "OK"))
    result.append(Outcome(3.0, 0.2, "http:get", "503"))
    return result


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(list(range(1, 101)), 0.99) == 99


def test_summarize_failover_times() -> None:
    summary = summarize("d", "text", 10.0, outcomes(), samples(), EVENTS, "primary", "secondary")

    assert summary.failover_s is not None
    assert abs(summary.failover_s - 0.2) < 1e-9
    assert summary.return_s is not None
    assert abs(summary.return_s - 0.6) < 1e-9
    assert summary.failback_s is not None
    assert abs(summary.failback_s - 1.4) < 1e-9
    assert summary.retries == 80


def test_summarize_phases_and_failures() -> None:
    summary = summarize("d", "text", 10.0, outcomes(), samples(), EVENTS, None, None)

    assert summary.failover_s is None
    assert summary.failed_by_code == {"503": 1}
    # The call that started before the fault and ended after it belongs to "during".
    assert summary.latency["before"].count == 20
    assert summary.latency["during"].max_ms == 2000.0
    assert summary.calls_by_site["before"]["secondary"] == 0


def test_write_report_files(tmp_path: Path) -> None:
    summary = summarize("d", "text", 10.0, outcomes(), samples(), EVENTS, "primary", "secondary")
    report = write_report(tmp_path / "out", summary, outcomes(), samples())

    text = report.read_text()
    assert "failed requests | 1 (503: 1)" in text
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 0
    assert (tmp_path / "out" / "per_second.csv").read_text().startswith("second,requests")


def test_report_worker_priority_times() -> None:
    events = replace(EVENTS, shift=True, workers_shifted_s=0.61, workers_back_s=None)
    summary = summarize("d", "text", 10.0, outcomes(), samples(), events, "primary", "secondary")

    text = render_markdown(summary, [])

    assert "consumer priority after the shift / the shift back | 0.61 s / n/a |" in text


def test_report_without_shift_no_worker_row() -> None:
    summary = summarize("d", "text", 10.0, outcomes(), samples(), EVENTS, "primary", "secondary")

    assert "consumer priority" not in render_markdown(summary, [])


def test_report_names_sites_and_phases() -> None:
    summary = summarize("d", "text", 10.0, outcomes(), samples(), EVENTS, "primary", "secondary")

    text = render_markdown(summary, [])

    assert "| time until all traffic left the primary site | 0.20 s |" in text
    assert "failback time (restore to last call on the secondary site)" in text
    assert "during from the fault until the restored processes were ready (6.00 s)" in text
