"""Turn Olist marketplace orders into per-shipment timelines of status events.

One CSV row is one shipment whose id is the order id. Each timestamp of the row becomes
one status event, and events are listed in the order the shipment state machine requires
(pending -> handling -> ready_to_ship -> shipped -> delivered), each with its own time
from the data. ``expected_final_status`` runs a local copy of the server's rules over the
timeline, so the replay can compare what the server stored with what it should store.

The functions are pure apart from ``load_orders``, which reads the CSV file. Running the
module (``python -m ops.timeline SOURCE DEST``) writes the deterministic subset that lives
in ``data/olist-sample/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
"""Format of every Olist timestamp column, for example ``2018-07-29 13:54:51``."""

REQUIRED_COLUMNS = (
    "order_id",
    "order_status",
    "order_purchase_timestamp",
    "order_approved_at",
    "order_delivered_carrier_date",
    "order_delivered_customer_date",
)
"""Columns that ``load_orders`` reads; other columns are ignored."""

OLIST_STATUSES = frozenset(
    {"created", "approved", "invoiced", "processing", "shipped", "delivered", "canceled"}
    | {"unavailable"}
)
"""Every ``order_status`` value that the Olist dataset uses."""

CANCELLING_STATUSES = frozenset({"canceled", "unavailable"})
"""Olist statuses that end the shipment in ``cancelled``."""

LIFECYCLE = ("pending", "handling", "ready_to_ship", "shipped", "delivered")
"""Shipment statuses in the order the state machine allows them, without the side exits."""

ALLOWED_NEXT = {
    "pending": frozenset({"handling", "cancelled"}),
    "handling": frozenset({"ready_to_ship", "cancelled"}),
    "ready_to_ship": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset({"delivered", "not_delivered"}),
}
"""Transitions the shipment service accepts; statuses missing here are terminal."""

_SHIPMENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_REQUEST_ID = 64

Outcome = Literal["created", "applied", "rejected"]
"""Expected server outcome of an event; ``rejected`` means HTTP 400 FAILED_PRECONDITION."""


class OrderFormatError(ValueError):
    """Raised when an orders CSV lacks a column or contains an invalid value."""


@dataclass(frozen=True)
class Order:
    """One Olist order row, reduced to the fields that drive the shipment status."""

    order_id: str
    """Olist order id, used as the shipment id."""
    status: str
    """Olist ``order_status``, one of ``OLIST_STATUSES``."""
    purchased_at: datetime
    """Purchase time (UTC-labelled, see ``parse_timestamp``)."""
    approved_at: datetime | None = None
    """Payment approval time, when present."""
    carrier_at: datetime | None = None
    """Time the seller handed the parcel to the carrier, when present."""
    delivered_at: datetime | None = None
    """Time the customer received the parcel, when present."""


@dataclass(frozen=True)
class Event:
    """One request of a shipment's replay: the create or one status transition."""

    shipment_id: str
    """Shipment id, equal to the order id."""
    status: str
    """Target status; ``pending`` for the create request."""
    occurred_at: datetime
    """When the event happened at the marketplace."""
    request_id: str
    """Idempotency key, the same on every replay of the same data."""
    late: bool
    """True when ``occurred_at`` is older than the last applied event of the shipment, so
    the server is expected to mark the event ``late`` in the history."""
    outcome: Outcome
    """Expected server outcome of the event."""

    @property
    def is_create(self) -> bool:
        return self.outcome == "created"


def parse_timestamp(value: str) -> datetime | None:
    """Parse an Olist timestamp; an empty string means the event did not happen.

    NOTE: Olist times are local marketplace time without a zone. They are labelled UTC,
    which keeps their order and spacing but not the absolute instant.

    Raises:
        ValueError: when the value does not match ``TIMESTAMP_FORMAT``.
    """
    if not value.strip():
        return None
    return datetime.strptime(value.strip(), TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def format_timestamp(moment: datetime) -> str:
    """Format a UTC time as RFC 3339 with a ``Z`` suffix, as protojson expects."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_order(row: Mapping[str, str]) -> Order:
    """Build an order from one CSV row mapping.

    Raises:
        OrderFormatError: for an invalid order id, status or timestamp, or a missing
            purchase timestamp.
    """
    order_id = row["order_id"]
    if not _SHIPMENT_ID.fullmatch(order_id):
        raise OrderFormatError(f"invalid order_id {order_id!r}: expected 1-64 of [A-Za-z0-9._-]")
    if row["order_status"] not in OLIST_STATUSES:
        raise OrderFormatError(f"order {order_id}: unknown order_status {row['order_status']!r}")
    try:
        times = [parse_timestamp(row[column]) for column in REQUIRED_COLUMNS[2:]]
    except ValueError as error:
        raise OrderFormatError(f"order {order_id}: invalid timestamp: {error}") from None
    if times[0] is None:
        raise OrderFormatError(f"order {order_id}: order_purchase_timestamp is missing")
    return Order(order_id, row["order_status"], times[0], *times[1:])


def parse_orders(text: str) -> list[Order]:
    """Parse the whole text of an Olist orders CSV, header included.

    Raises:
        OrderFormatError: for a missing column or an invalid row (with its line number).
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise OrderFormatError(f"missing CSV columns: {', '.join(missing)}")
    orders = []
    for row in reader:
        try:
            orders.append(parse_order(row))
        except OrderFormatError as error:
            raise OrderFormatError(f"line {reader.line_num}: {error}") from None
    return orders


def load_orders(path: Path | str) -> list[Order]:
    """Read an Olist orders CSV file (UTF-8) into orders, in file order.

    Raises:
        OSError: when the file cannot be read.
        OrderFormatError: as ``parse_orders``.
    """
    return parse_orders(Path(path).read_text(encoding="utf-8"))


def request_id(shipment_id: str, status: str) -> str:
    """Return the idempotency key of one event, at most 64 characters.

    The key depends only on the shipment and the target status, so replaying the same
    data twice sends the same keys and the second replay changes nothing.
    """
    key = f"replay-{shipment_id}-{status}"
    if len(key) <= _MAX_REQUEST_ID:
        return key
    digest = hashlib.sha256(shipment_id.encode()).hexdigest()[:32]
    return f"replay-{digest}-{status}"


def _raw_events(order: Order) -> list[tuple[str, datetime]]:
    """List (status, time) pairs of an order in lifecycle order, without outcomes."""
    events: list[tuple[str, datetime]] = [("pending", order.purchased_at)]
    if order.approved_at is not None:
        events.append(("handling", order.approved_at))
    if order.carrier_at is not None:
        events += [("ready_to_ship", order.carrier_at), ("shipped", order.carrier_at)]
    if order.delivered_at is not None:
        events.append(("delivered", order.delivered_at))
    if order.status in CANCELLING_STATUSES:
        events.append(("cancelled", max(moment for _, moment in events)))
    return events


def timeline(order: Order) -> list[Event]:
    """Return the events of one shipment in the order they must be sent.

    The outcomes follow the server's rules: an allowed transition is applied even when it
    is older than the current status (and is then late), and any other one is rejected.
    For example a cancelled order that already reached the carrier gets a rejected
    ``cancelled`` event, because cancelling is allowed only from pending, handling or
    ready_to_ship. Events go forward through the lifecycle, so none of them names an
    earlier status, which the server would record without applying.

    NOTE: the late flags assume that an applied late event sets the shipment's status time
    to its own ``occurred_at``. A server that kept the newer time would mark more events
    late.
    """
    (_, created_at), *transitions = _raw_events(order)
    events = [_event(order, "pending", created_at, False, "created")]
    current, current_time = "pending", created_at
    for status, moment in transitions:
        late = moment < current_time
        if status in ALLOWED_NEXT.get(current, ()):
            events.append(_event(order, status, moment, late, "applied"))
            current, current_time = status, moment
        else:
            events.append(_event(order, status, moment, late, "rejected"))
    return events


def _event(order: Order, status: str, moment: datetime, late: bool, outcome: Outcome) -> Event:
    return Event(order.order_id, status, moment, request_id(order.order_id, status), late, outcome)


def expected_final_status(order: Order) -> str:
    """Return the status the server ends in after the whole timeline of ``order``."""
    applied = [event.status for event in timeline(order) if event.outcome in ("created", "applied")]
    return applied[-1]


def count_out_of_order(order: Order) -> int:
    """Count the events of ``order`` that the server is expected to store as late."""
    return sum(1 for event in timeline(order) if event.late and event.outcome != "rejected")


def expected_rejections(order: Order) -> list[Event]:
    """Return the events of ``order`` that the server is expected to reject."""
    return [event for event in timeline(order) if event.outcome == "rejected"]


def out_of_order_kinds(order: Order) -> tuple[str, ...]:
    """Name each pair of consecutive timestamps of ``order`` that goes back in time.

    A name reads ``<later column>_before_<earlier column>``, for example
    ``carrier_before_approved``; an in-order row returns an empty tuple.
    """
    named = [
        ("purchase", order.purchased_at),
        ("approved", order.approved_at),
        ("carrier", order.carrier_at),
        ("delivered", order.delivered_at),
    ]
    present = [(name, moment) for name, moment in named if moment is not None]
    return tuple(
        f"{name}_before_{previous_name}"
        for (previous_name, previous), (name, moment) in itertools.pairwise(present)
        if moment < previous
    )


def select_sample(text: str, size: int = 200, out_of_order_per_kind: int = 15) -> str:
    """Select a deterministic subset of an orders CSV and return it as CSV text.

    Rows are ranked by the SHA-256 of their order id. The subset contains every row whose
    status is not ``delivered``, then the first ``out_of_order_per_kind`` rows of each
    out-of-order kind (see ``out_of_order_kinds``), then the first in-order rows until
    ``size`` rows are selected. Selected lines are copied unchanged, header first, in
    source order. The result exceeds ``size`` only when the first two groups already do.

    Raises:
        OrderFormatError: as ``parse_orders``.
    """
    lines = text.splitlines(keepends=True)
    orders = parse_orders(text)
    if len(orders) != len(lines) - 1:
        raise OrderFormatError("the sample selection needs one CSV row per line")
    ranked = sorted(range(len(orders)), key=lambda i: _rank(orders[i]))
    chosen = {i for i in ranked if orders[i].status != "delivered"}
    per_kind: dict[str, int] = {}
    for i in ranked:
        kinds = out_of_order_kinds(orders[i])
        if kinds and per_kind.get(kinds[0], 0) < out_of_order_per_kind and i not in chosen:
            per_kind[kinds[0]] = per_kind.get(kinds[0], 0) + 1
            chosen.add(i)
    for i in ranked:
        if len(chosen) >= size:
            break
        if not out_of_order_kinds(orders[i]):
            chosen.add(i)
    return lines[0] + "".join(lines[i + 1] for i in sorted(chosen))


def _rank(order: Order) -> str:
    return hashlib.sha256(order.order_id.encode()).hexdigest()


def summarize(orders: Iterable[Order]) -> dict[str, int]:
    """Count orders by expected final shipment status, sorted by status name."""
    counts: dict[str, int] = {}
    for order in orders:
        status = expected_final_status(order)
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Write the deterministic subset of SOURCE to DEST and print its SHA-256."""
    parser = argparse.ArgumentParser(prog="python -m ops.timeline", description=main.__doc__)
    parser.add_argument("source", type=Path, help="full Olist orders CSV")
    parser.add_argument("dest", type=Path, help="file to write the subset to")
    parser.add_argument("--size", type=int, default=200, help="rows in the subset (default 200)")
    args = parser.parse_args(argv)
    subset = select_sample(args.source.read_text(encoding="utf-8"), size=args.size)
    args.dest.write_bytes(subset.encode("utf-8"))
    print(hashlib.sha256(subset.encode("utf-8")).hexdigest(), args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
