"""Real Olist order timelines replayed through the running stack."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx
import pytest

from ops import replay
from ops.stack import Stack
from ops.timeline import expected_final_status, load_orders

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "olist-sample" / "orders.csv"
FULL_ORDERS = Path(
    os.environ.get("ENVIOS_OLIST_ORDERS")
    or ROOT.parent / "shared" / "data" / "olist_orders_sample.csv"
)
"""The full 4,000-order Olist file: ``ENVIOS_OLIST_ORDERS``, else beside the clone."""


def run_replay(stack: Stack, path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    args = parser.parse_args([str(path), "--url", stack.front_http_url, "--json", "--no-wait"])
    exit_code = replay.run(args)
    summary: dict[str, int] = json.loads(capsys.readouterr().out)
    assert exit_code == 0, summary
    return summary


def check_summary(summary: dict[str, int]) -> None:
    assert summary["errors"] == 0
    assert summary["mismatches"] == 0
    assert summary["transitions_applied"] == summary["expected_applied"]
    assert summary["late_events"] == summary["expected_late"]
    assert summary["rejected"] == summary["expected_rejected"]


def test_sample_replay_ends_in_expected_states(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = run_replay(stack, SAMPLE, capsys)
    check_summary(summary)
    assert summary["shipments"] == 200
    assert summary["late_events"] > 0


def test_stale_event_after_replay_not_applied(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A carrier resending an old event after delivery: recorded as late, status unchanged."""
    run_replay(stack, SAMPLE, capsys)
    orders = [order for order in load_orders(SAMPLE) if expected_final_status(order) == "delivered"]
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as client:
        for order in orders[:20]:
            shipment_id = order.order_id
            before = client.get(f"/v1/shipments/{shipment_id}").json()
            stale_time = before["statusTimes"]["handling"]
            response = client.patch(
                f"/shippings/{shipment_id}?request_id=stale-{shipment_id[:40]}",
                json={"status": "handling", "statusTime": stale_time},
            )
            assert response.status_code == 200, response.text
            after = response.json()
            assert after["status"] == "delivered"
            assert after["etag"] == before["etag"]
            assert after["history"][-1]["toStatus"] == "handling"
            assert after["history"][-1]["late"] is True
            assert after["history"][-1]["applied"] is False


def test_second_replay_changes_nothing(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    run_replay(stack, SAMPLE, capsys)
    again = run_replay(stack, SAMPLE, capsys)
    assert again["errors"] == 0
    assert again["mismatches"] == 0


@pytest.mark.realdata
@pytest.mark.skipif(
    not FULL_ORDERS.exists(), reason=f"the 4,000-order Olist file is not at {FULL_ORDERS}"
)
def test_full_olist_replay(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_replay(stack, FULL_ORDERS, capsys)
    check_summary(summary)
    assert summary["shipments"] == 4000
