"""``envios replay FILE``: drive real order timelines through the HTTP facade and verify.

Each order of an Olist orders CSV becomes one shipment (see ``ops.timeline``). Its events
are sent in lifecycle order through the front Envoy listener: the create as
``POST /v1/shipments`` and every transition as ``PATCH /shippings/{id}``, each with a
``request_id`` derived from the data, so a repeated replay changes nothing. Afterwards
every shipment is read back and compared with the status the timeline predicts.

Every count in the summary comes from HTTP responses; the ``expected_*`` counts come from
the timeline and are printed next to them for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from ops.timeline import (
    Event,
    Order,
    OrderFormatError,
    expected_final_status,
    format_timestamp,
    load_orders,
    timeline,
)

logger = logging.getLogger(__name__)

DEFAULT_SPEED = 1e7
"""Data seconds replayed per wall-clock second: about 116 days per second, so the two
years of the Olist orders take about 6 s."""

FALLBACK_URL = "http://127.0.0.1:8080"
"""Front listener of the default topology, used when the stack topology cannot be read."""

FAILED_PRECONDITION = 9
"""gRPC code of a transition the state machine does not allow."""

_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
_MAX_SAMPLES = 10


@dataclass(frozen=True)
class ReplayOptions:
    """How to send the events."""

    concurrency: int = 32
    """Maximum HTTP requests in flight."""
    speed: float = DEFAULT_SPEED
    """Time compression factor: data seconds per wall-clock second."""
    no_wait: bool = False
    """Send every event as soon as the response to the previous event of its shipment arrives."""
    retries: int = 3
    """Extra attempts after a 503, a connection error or a timeout, with the same request id."""
    backoff_s: float = 0.05
    """Delay before the first retry; it doubles on each further retry, up to 1 s."""
    progress: bool = False
    """Show a progress bar on stderr."""


@dataclass
class Summary:
    """Counts of one replay, printed at the end."""

    shipments: int = 0
    """Shipments in the replayed file."""
    requests: int = 0
    """Create and transition requests sent, retries not included."""
    created: int = 0
    """Create requests that returned HTTP 200."""
    transitions_applied: int = 0
    """Transitions of this replay that the stored histories show as applied."""
    late_events: int = 0
    """Transitions of this replay that the stored histories mark ``late``."""
    rejected: int = 0
    """Transitions rejected with HTTP 400 FAILED_PRECONDITION."""
    retries: int = 0
    """Requests sent again after a 503, a connection error or a timeout."""
    errors: int = 0
    """Requests that failed: a 503, connection error or timeout on every attempt, another
    5xx, or an unexpected 4xx."""
    skipped: int = 0
    """Events not sent because an earlier request of their shipment failed."""
    unverified: int = 0
    """Shipments not read back because one of their requests failed."""
    mismatches: int = 0
    """Shipments read back whose status differs from the expected final status."""
    expected_applied: int = 0
    """Transitions the timeline expects the server to apply."""
    expected_late: int = 0
    """Transitions the timeline expects the server to store as late."""
    expected_rejected: int = 0
    """Transitions the timeline expects the server to reject."""
    duration_s: float = 0.0
    """Wall-clock time of the replay and the verification."""
    error_samples: list[str] = field(default_factory=list)
    """Descriptions of the first errors."""
    mismatch_samples: list[str] = field(default_factory=list)
    """Descriptions of the first mismatched shipments."""

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.mismatches == 0

    def add_error(self, description: str) -> None:
        self.errors += 1
        logger.debug("replay error: %s", description)
        if len(self.error_samples) < _MAX_SAMPLES:
            self.error_samples.append(description)

    def add_mismatch(self, description: str) -> None:
        self.mismatches += 1
        if len(self.mismatch_samples) < _MAX_SAMPLES:
            self.mismatch_samples.append(description)


class _Sender:
    """Sends requests with bounded concurrency and retries, and counts the outcomes."""

    def __init__(self, client: httpx.AsyncClient, options: ReplayOptions, summary: Summary):
        self._client = client
        self._options = options
        self._summary = summary
        self._slots = asyncio.Semaphore(options.concurrency)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """Send one request, retrying a 503, a connection error or a timeout.

        Returns None, and counts an error, when the last attempt fails too. Retrying is
        safe because every write carries a request id.
        """
        failure = ""
        for attempt in range(self._options.retries + 1):
            if attempt:
                self._summary.retries += 1
                await asyncio.sleep(min(1.0, self._options.backoff_s * 2 ** (attempt - 1)))
            try:
                async with self._slots:
                    response = await self._client.request(method, url, **kwargs)
            except httpx.TransportError as error:
                failure = f"{method} {url}: {type(error).__name__}: {error}"
                logger.debug("attempt %d failed: %s", attempt + 1, failure)
                continue
            if response.status_code != 503:
                return response
            failure = f"{method} {url}: HTTP 503 {_error_message(response)}"
            logger.debug("attempt %d failed: %s", attempt + 1, failure)
        self._summary.add_error(failure)
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """Decode a JSON object body; anything else becomes an empty dict."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_message(response: httpx.Response) -> str:
    body = _json_object(response)
    return str(body.get("message", response.text[:200]))


def _error_reason(response: httpx.Response) -> str:
    for detail in _json_object(response).get("details", []):
        if isinstance(detail, dict) and detail.get("@type") == _ERROR_INFO_TYPE:
            return str(detail.get("reason", ""))
    return ""


def is_rejection(response: httpx.Response) -> bool:
    """Tell whether a response is a transition the state machine rejected (HTTP 400, code 9)."""
    return response.status_code == 400 and _json_object(response).get("code") == FAILED_PRECONDITION


async def _send_event(sender: _Sender, event: Event, summary: Summary) -> bool:
    """Send one event and count its outcome; False when the request failed."""
    summary.requests += 1
    body = {"statusTime": format_timestamp(event.occurred_at)}
    if event.is_create:
        method, url = "POST", "/v1/shipments"
        body["id"] = event.shipment_id
    else:
        method, url = "PATCH", f"/shippings/{event.shipment_id}"
        body["status"] = event.status
    response = await sender.request(method, url, params={"request_id": event.request_id}, json=body)
    if response is None:
        return False
    if response.is_success:
        summary.created += event.is_create
        return True
    if not event.is_create and is_rejection(response):
        summary.rejected += 1
        logger.debug("%s rejected: %s", event.request_id, _error_reason(response))
        return True
    status = f"HTTP {response.status_code} {_error_message(response)}"
    summary.add_error(f"{method} {url} ({event.request_id}): {status}")
    return False


class _Clock:
    """Maps data time to wall-clock time for the time-compressed schedule."""

    def __init__(self, events: Sequence[Event], options: ReplayOptions):
        self._origin = min((event.occurred_at for event in events), default=None)
        self._start = time.monotonic()
        self._options = options

    async def wait_for(self, event: Event) -> None:
        if self._options.no_wait or self._origin is None:
            return
        offset_s = (event.occurred_at - self._origin).total_seconds() / self._options.speed
        delay_s = self._start + offset_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


async def _replay_shipment(
    sender: _Sender, clock: _Clock, events: list[Event], summary: Summary, bar: tqdm[Any]
) -> bool:
    """Send the events of one shipment one after the other, in lifecycle order.

    Stops at the first failed request, because later events would only fail or be
    rejected for the missing one; returns False then.
    """
    for sent, event in enumerate(events):
        await clock.wait_for(event)
        if not await _send_event(sender, event, summary):
            summary.skipped += len(events) - sent - 1
            bar.update(len(events) - sent)
            return False
        bar.update(1)
    return True


async def _verify_shipment(
    sender: _Sender, order: Order, events: list[Event], summary: Summary
) -> None:
    """Read one shipment back, compare its status and count its applied and late events."""
    url = f"/v1/shipments/{order.order_id}"
    response = await sender.request("GET", url)
    if response is None:
        return
    if not response.is_success:
        summary.add_error(f"GET {url}: HTTP {response.status_code} {_error_message(response)}")
        return
    shipment = _json_object(response)
    if not shipment:
        summary.add_error(f"GET {url}: response body is not a JSON object: {response.text[:200]}")
        return
    ours = {event.request_id for event in events if not event.is_create}
    for entry in shipment.get("history", []):
        if isinstance(entry, dict) and entry.get("eventId") in ours:
            # protojson leaves out false booleans, so a missing key means false.
            summary.transitions_applied += bool(entry.get("applied", False))
            summary.late_events += bool(entry.get("late", False))
    expected = expected_final_status(order)
    if shipment.get("status") != expected:
        summary.add_mismatch(
            f"{order.order_id}: status {shipment.get('status')!r}, expected {expected!r}"
        )


def _count_expected(timelines: Sequence[list[Event]], summary: Summary) -> None:
    for events in timelines:
        summary.expected_applied += sum(event.outcome == "applied" for event in events)
        summary.expected_late += sum(event.late and event.outcome != "rejected" for event in events)
        summary.expected_rejected += sum(event.outcome == "rejected" for event in events)


async def replay_orders(
    orders: Sequence[Order], client: httpx.AsyncClient, options: ReplayOptions
) -> Summary:
    """Replay ``orders`` through ``client`` (whose base URL is the front listener) and verify.

    Transport errors and unexpected responses are counted as errors in the returned
    summary instead of being raised.
    """
    started = time.monotonic()
    summary = Summary(shipments=len(orders))
    timelines = [timeline(order) for order in orders]
    _count_expected(timelines, summary)
    sender = _Sender(client, options, summary)
    clock = _Clock([event for events in timelines for event in events], options)
    total = sum(len(events) for events in timelines)
    with tqdm(total=total, unit="event", file=sys.stderr, disable=not options.progress) as bar:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_replay_shipment(sender, clock, events, summary, bar))
                for events in timelines
            ]
    async with asyncio.TaskGroup() as group:
        for order, events, task in zip(orders, timelines, tasks, strict=True):
            if task.result():
                group.create_task(_verify_shipment(sender, order, events, summary))
            else:
                summary.unverified += 1
    summary.duration_s = round(time.monotonic() - started, 3)
    return summary


def default_url(environ: Mapping[str, str] | None = None) -> str:
    """Return the front listener URL of the stack that ``envios up`` runs.

    The stack's topology comes from ``ENVIOS_TOPOLOGY`` (default ``envoy/topology.toml``,
    port 8080). When it cannot be read, the URL is ``http://127.0.0.1:8080``.
    """
    try:
        from ops.stack import stack_from_environ

        return stack_from_environ(os.environ if environ is None else environ).front_http_url
    except (ImportError, OSError, ValueError) as error:
        logger.warning("cannot read the stack topology, using %s: %s", FALLBACK_URL, error)
        return FALLBACK_URL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``envios replay`` to ``parser``."""
    parser.add_argument(
        "file", type=Path, help="Olist orders CSV, for example data/olist-sample/orders.csv"
    )
    parser.add_argument("--limit", type=_positive_int, help="replay only the first N rows")

    parser.add_argument(
        "--url", help="front Envoy URL (default: from the stack topology, http://127.0.0.1:8080)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=32,
        help="maximum HTTP requests in flight (default 32)",
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=3,
        help="extra attempts after a 503, a connection error or a timeout (default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="timeout of each HTTP request in seconds (default 10)",
    )

    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--speed",
        type=_positive_float,
        default=DEFAULT_SPEED,
        help="time compression: data seconds per second (default 1e7, about 6 s for 2016-2018)",
    )
    timing.add_argument(
        "--no-wait",
        action="store_true",
        help="send events as fast as possible, ignoring their times",
    )

    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """Build the replay options from parsed ``envios replay`` arguments."""
    return ReplayOptions(
        concurrency=args.concurrency,
        speed=args.speed,
        no_wait=args.no_wait,
        retries=args.retries,
        progress=not args.quiet and sys.stderr.isatty(),
    )


def format_summary(summary: Summary) -> str:
    """Render the summary as aligned text lines, samples of errors and mismatches last."""
    counts = {key: value for key, value in asdict(summary).items() if not key.endswith("_samples")}
    lines = [f"{key.replace('_', ' '):<20} {value}" for key, value in counts.items()]
    lines += [f"error: {sample}" for sample in summary.error_samples]
    lines += [f"mismatch: {sample}" for sample in summary.mismatch_samples]
    return "\n".join(lines)


def run(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Run ``envios replay``: 0 when there were no errors and no mismatches, 1 otherwise,
    2 when the file cannot be read. ``transport`` replaces the network in tests."""
    try:
        orders = load_orders(args.file)
    except (OSError, OrderFormatError) as error:
        print(f"envios replay: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    orders = orders[: args.limit] if args.limit else orders
    summary = asyncio.run(_replay_with_client(orders, args, transport))
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        print(format_summary(summary))
    return 0 if summary.ok else 1


async def _replay_with_client(
    orders: Sequence[Order], args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None
) -> Summary:
    options = options_from_args(args)
    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(
        base_url=args.url or default_url(),
        http1=True,
        http2=False,
        timeout=args.timeout,
        limits=limits,
        transport=transport,
    ) as client:
        return await replay_orders(orders, client, options)
