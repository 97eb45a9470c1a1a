"""Envoy's two listeners: the front HTTP listener and the internal gRPC listener.

The front listener routes every request to the gateway cluster; the gRPC listener routes
each service's calls to its aggregate cluster, with retry conditions that depend on
whether the call is safe to repeat (see ``ops.envoy_policy``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.bindings import load_bindings
from gateway.routes import PathTemplate, SegmentKind
from ops.envoy_policy import (
    FRONT_IDEMPOTENCY_HEADER,
    FRONT_REQUEST_ID_PARAMETER,
    FRONT_SAFE_RETRY_ON,
    IDEMPOTENCY_HEADER,
    LONG_RUNNING_METHODS,
    READ_METHOD_PREFIXES,
    READ_ONLY_SERVICES,
    READ_RETRY_ON,
    REFLECTION_SERVICES,
    REFLECTION_TARGET,
    SECONDARY_FIRST_SUFFIX,
    TRAFFIC_RUNTIME_KEY,
    UNSENT_RETRY_ON,
    EnvoyTuning,
    Json,
    address,
    duration,
)
from ops.envoy_tracing import EnvoyTracing
from ops.topology import GRPC_SERVICE_NAMES, SERVICES, Topology

_TYPE = "type.googleapis.com/envoy."
HCM_TYPE = _TYPE + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = _TYPE + "extensions.filters.http.router.v3.Router"
GRPC_STATS_TYPE = _TYPE + "extensions.filters.http.grpc_stats.v3.FilterConfig"
STDOUT_LOG_TYPE = _TYPE + "extensions.access_loggers.stream.v3.StdoutAccessLog"
PREVIOUS_HOSTS_TYPE = _TYPE + "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES_TYPE = (
    _TYPE + "extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
)

GRPC_UNKNOWN = 2
LOCAL_REPLY_GRPC_CODES = {
    400: 3,
    403: 7,
    404: 5,
    408: 4,
    413: 8,
    429: 8,
    431: 8,
    500: 13,
    501: 12,
    502: 14,
    503: 14,
    504: 4,
}
"""gRPC code in the JSON body of each HTTP status that Envoy's front listener replies with."""

ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS(SNAKE_STRING)%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "upstream": "%UPSTREAM_HOST%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
}
"""One compact JSON object per request on Envoy's stdout."""


def _access_logs(enabled: bool) -> list[Json]:
    if not enabled:
        return []
    log_format = {"json_format": dict(ACCESS_LOG_FORMAT)}
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {"@type": STDOUT_LOG_TYPE, "log_format": log_format},
        }
    ]


def _router_filter() -> Json:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}


def _listener(name: str, port: int, manager: Json) -> Json:
    manager = {"@type": HCM_TYPE, **manager}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    return {"name": name, "address": address(port), "filter_chains": [{"filters": [hcm]}]}


def _front_routes(tuning: EnvoyTuning) -> list[Json]:
    """Return the front routes: keyed writes, then reads, then every other request.

    A write whose ``requestId`` query parameter is set carries an idempotency key (the
    gateway sends it as the ``IDEMPOTENCY_HEADER`` metadata), so keyed writes and GET
    requests are retried on another gateway also when the first one failed after the
    request was sent; other requests only when it was never sent. Every route drops a
    caller's own ``FRONT_IDEMPOTENCY_HEADER``: only the request's ``request_id`` field may
    mark a write as safe to repeat.
    """
    keyed = {
        "prefix": "/",
        "query_parameters": [
            {"name": FRONT_REQUEST_ID_PARAMETER, "string_match": {"safe_regex": {"regex": ".+"}}}
        ],
    }
    get_method = [{"name": ":method", "string_match": {"exact": "GET"}}]
    get = {"prefix": "/", "headers": get_method}
    routes = [_front_route("keyed-write", keyed, FRONT_SAFE_RETRY_ON, tuning)]
    for template in streaming_get_templates():
        stream = {"safe_regex": {"regex": template_regex(template)}, "headers": get_method}
        routes.append(
            _front_route("stream " + template.source, stream, FRONT_SAFE_RETRY_ON, tuning)
        )
    read = _front_route("read", get, FRONT_SAFE_RETRY_ON, tuning)
    read["route"]["retry_policy"]["per_try_idle_timeout"] = duration(
        tuning.front_read_idle_timeout_s
    )
    routes += [read, _front_route("call", {"prefix": "/"}, UNSENT_RETRY_ON, tuning)]
    return [{**route, "request_headers_to_remove": [FRONT_IDEMPOTENCY_HEADER]} for route in routes]


def _front_route(name: str, match: Json, retry_on: Sequence[str], tuning: EnvoyTuning) -> Json:
    action = {
        "cluster": "gateway",
        "timeout": duration(tuning.front_route_timeout_s),
        "retry_policy": _retry_policy(retry_on, tuning, priorities=0),
    }
    return {"name": name, "match": match, "route": action}


def streaming_get_templates() -> list[PathTemplate]:
    """Return the path templates of the gateway's GET bindings to server-streaming rpcs."""
    return [
        binding.template
        for binding in load_bindings()
        if binding.server_streaming and binding.http_method == "GET"
    ]


def template_regex(template: PathTemplate) -> str:
    """Return an RE2 expression that matches the paths of ``template`` (without the query).

    ``*`` matches one non-empty segment and ``**`` anything after its slash. Envoy's
    ``safe_regex`` path match must cover the whole path.

    NOTE: the gateway also lets ``**`` match no segment at all (``/files`` for
    ``/files/{path=**}``), which this expression does not match.
    """
    parts = []
    for segment in template.segments:
        if segment.kind is SegmentKind.LITERAL:
            parts.append(re.escape(segment.text))
        elif segment.kind is SegmentKind.WILDCARD:
            parts.append("[^/]+")
        else:
            parts.append(".*")
    verb = ":" + re.escape(template.verb) if template.verb else ""
    return "/" + "/".join(parts) + verb


def _local_reply_config() -> Json:
    """Return JSON bodies in the ``google.rpc.Status`` shape for replies Envoy makes itself.

    A full pending queue of the gateway cluster (response flag ``UO``) becomes 429
    RESOURCE_EXHAUSTED, like the gateway's own concurrency limit. Other statuses keep
    their HTTP code and get the gRPC code that the gateway maps to it.
    """
    overflow = {
        "filter": {"response_flag_filter": {"flags": ["UO"]}},
        "status_code": 429,
        "body_format_override": _status_body(LOCAL_REPLY_GRPC_CODES[429]),
    }
    mappers = [_page_unavailable_mapper(), overflow]
    for http_status, grpc_code in LOCAL_REPLY_GRPC_CODES.items():
        status_filter = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {
                        "default_value": http_status,
                        # Envoy requires a runtime key here; nothing sets it.
                        "runtime_key": f"envios.front.local_reply.{http_status}",
                    },
                }
            }
        }
        mappers.append({"filter": status_filter, "body_format_override": _status_body(grpc_code)})
    return {"mappers": mappers, "body_format": _status_body(GRPC_UNKNOWN)}


PAGE_UNAVAILABLE_HTML = """<!doctype html>
<html lang="es">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>Seguimiento de envíos / Shipment tracking</title>
</head>
<body>
<h1>Seguimiento de envíos</h1>
<p>La página no está disponible en este momento. Se volverá a cargar sola en 30 segundos.</p>
<h1 lang="en">Shipment tracking</h1>
<p lang="en">The page is not available right now. It will reload by itself in 30 seconds.</p>
</body>
</html>
"""
"""Page the front listener sends for the tracking page when no gateway can serve it."""

PAGE_UNAVAILABLE_HEADERS = (
    ("cache-control", "no-store"),
    ("retry-after", "30"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
"""Headers of ``PAGE_UNAVAILABLE_HTML``: the page has no script, style or image to load."""

PAGE_PATHS_REGEX = r"/(track)?([/?].*)?"
"""``:path`` values of the tracking page, its files and ``/`` (the query string included)."""


def _page_unavailable_mapper() -> Json:
    """Return a mapper that turns Envoy's 503 for the tracking page into ``PAGE_UNAVAILABLE_HTML``.

    A browser that opens ``/track`` while every gateway is down gets a page in both languages
    that reloads itself, not the JSON body meant for API callers. Only GET and HEAD
    requests get it, the methods the gateway serves the page to.
    """
    page_path = {
        "header_filter": {
            "header": {"name": ":path", "string_match": {"safe_regex": {"regex": PAGE_PATHS_REGEX}}}
        }
    }
    page_method = {
        "header_filter": {
            "header": {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}
        }
    }
    unavailable = {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": 503, "runtime_key": "envios.front.local_reply.page"},
            }
        }
    }
    return {
        "filter": {"and_filter": {"filters": [unavailable, page_method, page_path]}},
        "headers_to_add": [
            {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for name, value in PAGE_UNAVAILABLE_HEADERS
        ],
        "body_format_override": {
            "text_format_source": {"inline_string": PAGE_UNAVAILABLE_HTML},
            "content_type": "text/html; charset=UTF-8",
        },
    }


def _status_body(grpc_code: int) -> Json:
    body = {"code": grpc_code, "message": "%LOCAL_REPLY_BODY%", "details": []}
    return {"json_format": body}


def front_listener(
    topology: Topology, access_log: bool, tuning: EnvoyTuning, tracing: EnvoyTracing | None = None
) -> Json:
    manager: Json = {
        "stat_prefix": "front",
        "codec_type": "AUTO",
        # The front listener is the edge: the client's address goes into x-forwarded-for.
        "use_remote_address": True,
        "generate_request_id": True,
        # Keep a caller's x-request-id and generate one when absent. Without a tracer Envoy
        # forwards the caller's traceparent unchanged; with one it sends its own span's.
        "preserve_external_request_id": True,
        "normalize_path": True,
        "request_headers_timeout": duration(tuning.front_request_headers_timeout_s),
        "merge_slashes": True,
        "access_log": _access_logs(access_log),
        "http_filters": [_router_filter()],
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "front",
            "virtual_hosts": [
                {"name": "gateway", "domains": ["*"], "routes": _front_routes(tuning)}
            ],
        },
    }
    if tracing is not None:
        manager["tracing"] = tracing.connection_manager_tracing("envoy-front")
    return _listener("front", topology.front_port, manager)


def grpc_listener(
    topology: Topology, access_log: bool, tuning: EnvoyTuning, tracing: EnvoyTracing | None = None
) -> Json:
    grpc_stats = {
        "name": "envoy.filters.http.grpc_stats",
        "typed_config": {
            "@type": GRPC_STATS_TYPE,
            "stats_for_all_methods": True,
            "replace_dots_in_grpc_service_name": True,
        },
    }
    manager: Json = {
        "stat_prefix": "grpc",
        "codec_type": "HTTP2",
        "generate_request_id": True,
        "access_log": _access_logs(access_log),
        "http_filters": [grpc_stats, _router_filter()],
        "route_config": {
            "name": "grpc",
            "virtual_hosts": [
                {"name": "services", "domains": ["*"], "routes": _grpc_routes(topology, tuning)}
            ],
        },
    }
    if tracing is not None:
        manager["tracing"] = tracing.connection_manager_tracing("envoy-grpc")
    return _listener("grpc", topology.grpc_port, manager)


def _grpc_routes(topology: Topology, tuning: EnvoyTuning) -> list[Json]:
    """Return the gRPC routes, most specific first: reads, long calls, keyed writes, others.

    Every service route comes twice: first a copy that takes ``TRAFFIC_RUNTIME_KEY``
    percent of the calls to the secondary-first aggregate, then the normal one.
    """
    routes = []
    for service in SERVICES:
        prefix = f"/{GRPC_SERVICE_NAMES[service]}/"
        if service in READ_ONLY_SERVICES:
            routes += _shiftable(_grpc_route(prefix, service, topology, tuning, read=True))
            continue
        for method in READ_METHOD_PREFIXES:
            read = _grpc_route(prefix + method, service, topology, tuning, read=True)
            routes += _shiftable(read)
        for method in LONG_RUNNING_METHODS.get(service, ()):
            routes += _shiftable(
                _grpc_route(prefix + method, service, topology, tuning, read=False)
            )
        keyed = _grpc_route(prefix, service, topology, tuning, read=True, keyed=True)
        routes += _shiftable(keyed)
        routes += _shiftable(_grpc_route(prefix, service, topology, tuning, read=False))
    # Reflection streams stay open for a whole client session, so they get no per-try
    # timeout and only the retries of calls that never reached a server.
    for reflection in REFLECTION_SERVICES:
        route = _grpc_route(f"/{reflection}/", REFLECTION_TARGET, topology, tuning, read=False)
        routes.append(route)
    return routes


def _grpc_route(
    prefix: str,
    cluster: str,
    topology: Topology,
    tuning: EnvoyTuning,
    *,
    read: bool,
    keyed: bool = False,
) -> Json:
    """Return one gRPC route; ``read`` calls are retried even after reaching a server.

    With ``keyed`` the route matches only calls that carry ``IDEMPOTENCY_HEADER``.
    """
    hosts_per_site = len(topology.primary.ports[cluster])
    retry_on = READ_RETRY_ON if read else UNSENT_RETRY_ON
    retry_policy = _retry_policy(retry_on, tuning, priorities=hosts_per_site)
    if read:
        retry_policy["per_try_timeout"] = duration(tuning.read_per_try_timeout_s)
    action = {
        "cluster": cluster,
        # No route timeout: the caller's grpc-timeout header (its deadline) bounds the call.
        "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        "retry_policy": retry_policy,
    }
    match: Json = {"prefix": prefix}
    kind = "read" if read else "call"
    if keyed:
        match["headers"] = [{"name": IDEMPOTENCY_HEADER, "present_match": True}]
        kind = "keyed-write"
    return {"name": f"{prefix}:{kind}", "match": match, "route": action}


def _shiftable(route: Json) -> list[Json]:
    """Return ``route`` preceded by its copy for the traffic shifted to the secondary first.

    ``runtime_fraction`` lets ``TRAFFIC_RUNTIME_KEY`` percent of the matching calls take
    the copy; the rest fall through to ``route``.
    """
    fraction = {
        "default_value": {"numerator": 0, "denominator": "HUNDRED"},
        "runtime_key": TRAFFIC_RUNTIME_KEY,
    }
    shifted_action = {
        **route["route"],
        "cluster": route["route"]["cluster"] + SECONDARY_FIRST_SUFFIX,
    }
    shifted = {
        "name": route["name"] + ":shifted",
        "match": {**route["match"], "runtime_fraction": fraction},
        "route": shifted_action,
    }
    return [shifted, route]


def _retry_policy(retry_on: Sequence[str], tuning: EnvoyTuning, *, priorities: int) -> Json:
    """Return a retry policy that moves each retry to a host not tried yet.

    With ``priorities`` > 0 a retry also leaves a priority (site) after that many attempts
    in it, so the retries of a failing primary site go to the secondary.
    """
    policy: Json = {
        "retry_on": ",".join(retry_on),
        "num_retries": tuning.num_retries,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS_TYPE},
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }
    if priorities > 0:
        policy["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {"@type": PREVIOUS_PRIORITIES_TYPE, "update_frequency": priorities},
        }
    return policy
