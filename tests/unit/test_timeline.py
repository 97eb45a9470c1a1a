"""Unit tests of ops.timeline: Olist rows to shipment events and expected outcomes."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.timeline import (
    Order,
    OrderFormatError,
    count_out_of_order,
    expected_final_status,
    expected_rejections,
    format_timestamp,
    load_orders,
    out_of_order_kinds,
    parse_orders,
    request_id,
    select_sample,
    summarize,
    timeline,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "olist-sample" / "orders.csv"
SAMPLE_SHA256 = "af96108c57f285d8b390b19ed5611ee1b5b5cf9b525f300d98239dd79807fd40"
HEADER = (
    "order_id,customer_id,order_status,order_purchase_timestamp,order_approved_at,"
    "order_delivered_carrier_date,order_delivered_customer_date,order_estimated_delivery_date\n"
)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2018, 3, day, hour, tzinfo=UTC)


def order(status: str, *times: datetime | None) -> Order:
    padded = [*times, None, None, None][:3]
    return Order("a1b2", status, at(1), padded[0], padded[1], padded[2])


MAPPING = [
    (
        order("delivered", at(2), at(3), at(5)),
        ["pending", "handling", "ready_to_ship", "shipped", "delivered"],
        "delivered",
    ),
    (
        order("shipped", at(2), at(3)),
        ["pending", "handling", "ready_to_ship", "shipped"],
        "shipped",
    ),
    (order("invoiced", at(2)), ["pending", "handling"], "handling"),
    (order("processing", at(2)), ["pending", "handling"], "handling"),
    (order("approved", at(2)), ["pending", "handling"], "handling"),
    (order("created"), ["pending"], "pending"),
    (order("canceled"), ["pending", "cancelled"], "cancelled"),
    (order("canceled", at(2)), ["pending", "handling", "cancelled"], "cancelled"),
    (order("unavailable", at(2)), ["pending", "handling", "cancelled"], "cancelled"),
    (
        order("canceled", at(2), at(3)),
        ["pending", "handling", "ready_to_ship", "shipped", "cancelled"],
        "shipped",
    ),
]


@pytest.mark.parametrize(("row", "statuses", "final"), MAPPING)
def test_timeline_mapping(row: Order, statuses: list[str], final: str) -> None:
    events = timeline(row)
    assert [event.status for event in events] == statuses
    assert events[0].is_create
    assert events[0].occurred_at == row.purchased_at
    assert expected_final_status(row) == final


def test_timeline_in_order_not_late() -> None:
    events = timeline(order("delivered", at(2), at(3), at(5)))
    assert [event.late for event in events] == [False] * 5
    assert [event.outcome for event in events[1:]] == ["applied"] * 4


def test_timeline_carrier_before_approval() -> None:
    row = order("delivered", at(3), at(2), at(5))
    events = {event.status: event for event in timeline(row)}
    assert events["ready_to_ship"].late
    assert events["ready_to_ship"].outcome == "applied"
    assert events["ready_to_ship"].occurred_at == at(2)
    assert not events["shipped"].late
    assert not events["delivered"].late
    assert count_out_of_order(row) == 1
    assert out_of_order_kinds(row) == ("carrier_before_approved",)
    assert expected_final_status(row) == "delivered"


def test_timeline_delivered_before_carrier() -> None:
    row = order("delivered", at(2), at(5), at(4))
    events = {event.status: event for event in timeline(row)}
    assert events["delivered"].late
    assert events["delivered"].outcome == "applied"
    assert out_of_order_kinds(row) == ("delivered_before_carrier",)
    assert expected_final_status(row) == "delivered"


def test_timeline_cancel_after_carrier_rejected() -> None:
    row = order("canceled", at(2), at(3))
    rejected = expected_rejections(row)
    assert [event.status for event in rejected] == ["cancelled"]
    assert rejected[0].occurred_at == at(3)
    assert count_out_of_order(row) == 0


def test_timeline_cancel_at_last_timestamp() -> None:
    row = order("unavailable", at(6))
    cancelled = timeline(row)[-1]
    assert cancelled.status == "cancelled"
    assert cancelled.occurred_at == at(6)
    assert cancelled.outcome == "applied"


def test_timeline_missing_approval_rejects_rest() -> None:
    row = order("delivered", None, at(3), at(5))
    outcomes = [event.outcome for event in timeline(row)]
    assert outcomes == ["created", "rejected", "rejected", "rejected"]
    assert expected_final_status(row) == "pending"


def test_request_ids_deterministic() -> None:
    row = order("delivered", at(2), at(3), at(5))
    first = [event.request_id for event in timeline(row)]
    assert first == [event.request_id for event in timeline(row)]
    assert first[0] == "replay-a1b2-pending"
    assert first[2] == "replay-a1b2-ready_to_ship"
    assert len(set(first)) == len(first)


def test_request_id_long_shipment_id() -> None:
    key = request_id("x" * 64, "ready_to_ship")
    assert len(key) <= 64
    assert key == request_id("x" * 64, "ready_to_ship")
    assert key != request_id("y" * 64, "ready_to_ship")


def test_format_timestamp_rfc3339() -> None:
    assert format_timestamp(at(2, 9)) == "2018-03-02T09:00:00Z"


def test_parse_orders_row() -> None:
    text = HEADER + "ab12,c1,shipped,2018-03-01 10:00:00,2018-03-01 11:30:00,2018-03-02 08:00:00,,"
    (parsed,) = parse_orders(text + "2018-03-20 00:00:00\n")
    assert parsed.order_id == "ab12"
    assert parsed.status == "shipped"
    assert parsed.approved_at == datetime(2018, 3, 1, 11, 30, tzinfo=UTC)
    assert parsed.delivered_at is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("ab12,c1,lost,2018-03-01 10:00:00,,,,", "unknown order_status"),
        ("ab12,c1,created,,,,,", "order_purchase_timestamp is missing"),
        ("ab12,c1,created,01/03/2018,,,,", "invalid timestamp"),
        ("ab/12,c1,created,2018-03-01 10:00:00,,,,", "invalid order_id"),
    ],
)
def test_parse_orders_invalid(row: str, message: str) -> None:
    with pytest.raises(OrderFormatError, match=message) as raised:
        parse_orders(HEADER + row + "\n")
    assert "line 2" in str(raised.value)


def test_parse_orders_missing_column() -> None:
    with pytest.raises(OrderFormatError, match="order_approved_at"):
        parse_orders("order_id,order_status,order_purchase_timestamp\n")


def test_sample_file_unchanged() -> None:
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == SAMPLE_SHA256


def test_sample_statuses() -> None:
    orders = load_orders(SAMPLE)
    counts = Counter(row.status for row in orders)
    assert len(orders) == 200
    assert counts == {
        "delivered": 98,
        "shipped": 39,
        "canceled": 23,
        "unavailable": 17,
        "processing": 14,
        "invoiced": 9,
    }


def test_sample_expected_final_states() -> None:
    orders = load_orders(SAMPLE)
    assert summarize(orders) == {"cancelled": 38, "delivered": 98, "handling": 23, "shipped": 41}


def test_sample_out_of_order_rows() -> None:
    orders = load_orders(SAMPLE)
    out_of_order = [row for row in orders if out_of_order_kinds(row)]
    assert len(out_of_order) >= 8
    assert sum(count_out_of_order(row) for row in orders) == 16
    assert all(count_out_of_order(row) == 1 for row in out_of_order)


def test_sample_expected_rejections() -> None:
    orders = load_orders(SAMPLE)
    rejected = [event for row in orders for event in expected_rejections(row)]
    assert len(rejected) == 2
    assert {event.status for event in rejected} == {"cancelled"}


def test_select_sample_groups() -> None:
    rows = [
        "d1,c,delivered,2018-03-01 10:00:00,2018-03-01 11:00:00,2018-03-02 10:00:00,"
        "2018-03-05 10:00:00,",
        "d2,c,delivered,2018-03-01 10:00:00,2018-03-01 11:00:00,2018-03-02 10:00:00,"
        "2018-03-05 10:00:00,",
        "x1,c,delivered,2018-03-01 10:00:00,2018-03-03 11:00:00,2018-03-02 10:00:00,"
        "2018-03-05 10:00:00,",
        "x2,c,delivered,2018-03-01 10:00:00,2018-03-03 11:00:00,2018-03-02 10:00:00,"
        "2018-03-05 10:00:00,",
        "s1,c,shipped,2018-03-01 10:00:00,2018-03-01 11:00:00,2018-03-02 10:00:00,,",
    ]
    text = HEADER + "".join(row + "\n" for row in rows)
    subset = select_sample(text, size=3, out_of_order_per_kind=1)
    lines = subset.splitlines(keepends=True)
    assert lines[0] == HEADER
    assert len(lines) == 4
    assert rows[4] + "\n" in lines
    assert sum(line.startswith("x") for line in lines) == 1
    assert select_sample(text, size=3, out_of_order_per_kind=1) == subset


FULL_ORDERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "olist_orders_sample.csv"
"""The 4,000-order file the committed sample was cut from, when it sits beside the clone."""


@pytest.mark.realdata
def test_sample_reproducible() -> None:
    source = Path(os.environ.get("ENVIOS_OLIST_ORDERS") or FULL_ORDERS)
    if not source.exists():
        pytest.skip(f"the 4,000-order Olist CSV is not at {source}; set ENVIOS_OLIST_ORDERS")
    subset = select_sample(source.read_text(encoding="utf-8"))
    assert subset.encode("utf-8") == SAMPLE.read_bytes()
