"""Project shipment transition events into the status cache.

An event names a shipment and the version its transition produced. The projector
writes the shipment's current row (version equal to or newer than the event's) into
Redis through the version-guarded ``StatusCache.put``, so the entry it writes matches
what StatusService fills on a miss, and an older or repeated event never replaces a
newer entry. Reading the row, not the event body, also covers events that carry no
status time (a substatus or tracking number change keeps the status time).

Handling an event is idempotent:

- an event id (AMQP ``message_id``) seen before is skipped (``DUPLICATE``);
- an event whose version the cache already holds, or a newer one, is skipped and marked
  seen (``CURRENT``), which is the usual case while ShipmentService writes through;
- otherwise the row is read and written (``APPLIED``), then the event is marked seen.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from typing import Protocol

from services.common.cache import EVENT_KEY, SHIPMENT_KEY, StatusCache
from services.common.database import now_us
from services.status.views import ShipmentStatusView, shipment_fields

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """Result of handling one event; the value is the metric label."""

    APPLIED = "applied"
    CURRENT = "current"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


class MalformedEvent(ValueError):
    """An event body that is not JSON or lacks ``shipment_id`` or ``version``."""


@dataclass(frozen=True)
class TransitionEvent:
    """The fields of a transition event the projector uses."""

    event_id: str
    """AMQP ``message_id``: unique per outbox row."""
    shipment_id: str
    version: int
    """Shipment version after the transition (unchanged for an event recorded late)."""
    record_time_us: int
    """When the transition was committed, or 0 when the body has no commit time."""


class ShipmentQueries(Protocol):
    async def shipment(self, shipment_id: str) -> ShipmentStatusView | None: ...


def parse_event(body: bytes, message_id: str | None) -> TransitionEvent:
    """Decode an event body. Raises MalformedEvent."""
    try:
        fields = json.loads(body)
        return TransitionEvent(
            event_id=message_id or str(fields["event_id"]),
            shipment_id=str(fields["shipment_id"]),
            version=int(fields["version"]),
            record_time_us=int(fields.get("record_time_us", 0)),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise MalformedEvent(f"invalid transition event {body[:200]!r}: {error!r}") from error


class StatusProjector:
    """Write the state each transition event names into the status cache."""

    def __init__(
        self, cache: StatusCache, queries: ShipmentQueries, *, marker_ttl_s: float = 86_400.0
    ) -> None:
        self.cache = cache
        self.queries = queries
        self.marker_ttl_s = marker_ttl_s

    async def project(self, event: TransitionEvent) -> Outcome:
        """Bring the cache entry of the event's shipment up to at least its version.

        Raises:
            CacheUnavailable: Redis failed; the event must be handled again later.
            Unavailable: the database cannot be read; handle the event again later.
        """
        key = SHIPMENT_KEY.format(event.shipment_id)
        marker = EVENT_KEY.format(event.event_id)
        seen = await self.cache.check_event(key, marker, event.version, self.marker_ttl_s)
        if seen:
            return Outcome.DUPLICATE if seen == 2 else Outcome.CURRENT
        view = await self.queries.shipment(event.shipment_id)
        if view is None:
            logger.error(
                "event %s names shipment %s, which the database does not contain; skipping it",
                event.event_id,
                event.shipment_id,
            )
            return Outcome.MALFORMED
        written = await self.cache.put(key, view.version, shipment_fields(view))
        await self.cache.mark_event(marker, self.marker_ttl_s)
        return Outcome.APPLIED if written else Outcome.CURRENT


def lag_s(event: TransitionEvent) -> float | None:
    """Return the seconds from the event's commit until now, or None when unknown."""
    if not event.record_time_us:
        return None
    return (now_us() - event.record_time_us) / 1_000_000
