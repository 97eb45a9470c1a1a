"""Routing policy and timings shared by the Envoy listener and cluster renderers.

Which calls are reads, which retry conditions each kind of call gets, the runtime key
that shifts traffic between sites, and the timings and limits that the topology does not
carry (``EnvoyTuning``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ops.topology import HOST
from services.common.traffic import TRAFFIC_RUNTIME_KEY as TRAFFIC_RUNTIME_KEY

Json = dict[str, Any]

READ_METHOD_PREFIXES = ("Get", "List", "BatchGet")
"""Method name prefixes of read methods (AIP standard methods), which are safe to repeat.

Every method of a service in ``READ_ONLY_SERVICES`` is a read as well. A new method whose
name starts with one of these prefixes must not change state.
"""

READ_ONLY_SERVICES = ("status",)
"""Services whose every method is a read."""

LONG_RUNNING_METHODS = {"task": ("RunTask", "WatchTask")}
"""Methods per service that may run longer than a per-try timeout (tasks take 1 to 5 s or
more), so they get no per-try timeout and only the retries of calls that never reached a
server, even with an idempotency key."""

REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
"""Server reflection services, routed to the ``REFLECTION_TARGET`` service."""

REFLECTION_TARGET = "shipment"

UNSENT_RETRY_ON = ("connect-failure", "refused-stream", "reset-before-request")
"""Retry conditions under which the request never reached a server: safe for every call."""

READ_RETRY_ON = (*UNSENT_RETRY_ON, "unavailable", "cancelled", "reset")
"""Retry conditions for reads: a server may have seen the request, which a read tolerates.

Envoy sees ``unavailable`` and ``cancelled`` only in Trailers-Only responses, where the
server failed before sending anything. ``reset`` also covers a per-try timeout.
"""

IDEMPOTENCY_HEADER = "idempotency-key"
"""gRPC metadata key that marks a write as safe to repeat.

A caller sends it with the same value as the request's ``request_id`` field, which the
service uses to apply the write once. Envoy cannot read the protobuf body, so a write
carrying this header gets the retries of a read.
"""

FRONT_IDEMPOTENCY_HEADER = "grpc-metadata-" + IDEMPOTENCY_HEADER
"""HTTP header that the gateway forwards as the ``IDEMPOTENCY_HEADER`` metadata."""

FRONT_REQUEST_ID_PARAMETER = "requestId"
"""Query parameter of the HTTP facade that fills a write's ``request_id`` field."""


SECONDARY_FIRST_SUFFIX = "_secondary_first"
"""Suffix of the aggregate cluster that lists a service's secondary site first."""

FRONT_SAFE_RETRY_ON = (*UNSENT_RETRY_ON, "reset")
"""Front retry conditions for GET requests and keyed writes: also after a gateway reset.

A 503 from a gateway is not retried, because the gateway returns it after the gRPC
listener already retried the call on both sites.
"""


@dataclass(frozen=True)
class EnvoyTuning:
    """Timings and limits of the rendered configuration that the topology does not carry."""

    connect_timeout_s: float = 0.25
    """Upstream TCP connect timeout, short because every upstream is on loopback."""
    health_check_interval_s: float = 1.0
    """Active health check interval, also used while a cluster carries no traffic."""
    health_check_timeout_s: float = 1.0
    """Time to wait for one health check response. A check of a frozen host times out
    after this long. Because one failure marks a host unhealthy, a freeze is noticed
    within ``health_check_interval_s + health_check_timeout_s`` (2 s)."""
    unhealthy_threshold: int = 1
    """Failed health checks in a row that mark a host unhealthy. One failure is enough
    because a loopback health check that takes ``health_check_timeout_s`` (1 s) means the
    host is frozen or starved, and the next passing check makes it healthy again."""
    front_request_headers_timeout_s: float = 10.0
    """Time a caller of the front listener gets to send a request's headers. Envoy
    disconnects a slower caller. Without this setting Envoy has no such limit."""
    front_route_timeout_s: float = 60.0
    """Whole-request timeout on the front listener, long enough for run-and-wait tasks."""
    front_read_idle_timeout_s: float = 3.0
    """Time one attempt of a front GET request may receive no response bytes. Envoy then
    resets it and retries on the other gateway, so a read sent to a gateway that froze
    before a health check took it out waits this long, not the whole route timeout. It is
    longer than one attempt of the gateway's read call (``read_per_try_timeout_s``) plus
    a quick retry. Server-streaming GET routes, which may be quiet between messages, get
    no idle timeout."""
    num_retries: int = 3
    """Retries per call after the first attempt."""
    read_per_try_timeout_s: float = 2.0
    """Timeout of each attempt of a read call, within the caller's deadline for the whole call."""
    outlier_interval_s: float = 5.0
    """Outlier detection interval, over which the failure percentage is computed."""
    base_ejection_time_s: float = 10.0
    """Ejection time of an outlier host, multiplied by the number of its ejections."""
    max_downstream_connections: int = 10_000
    """Connections Envoy accepts over all listeners before it rejects new ones."""
    max_ejection_time_s: float = 300.0
    """Longest ejection of an outlier host; repeated ejections grow up to this time."""


DEFAULT_TUNING = EnvoyTuning()


def duration(seconds: float) -> str:
    """Return ``seconds`` in the duration syntax of Envoy's YAML, such as ``0.5s``."""
    return f"{seconds:g}s"


def address(port: int) -> Json:
    """Return a socket address on ``HOST`` and ``port``."""
    return {"socket_address": {"address": HOST, "port_value": port}}
