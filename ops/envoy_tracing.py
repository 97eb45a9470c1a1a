"""Envoy's OpenTelemetry tracer: where it sends spans and which requests it samples.

The rendered configuration traces only when an OTLP endpoint is configured, read from the
same ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` and ``..._PROTOCOL`` variables the Python
processes use. Then each HTTP connection manager gets the ``envoy.tracers.opentelemetry``
tracer and the bootstrap gets a ``otel_collector`` cluster for the collector.

With a tracer, Envoy starts one span per request, continues the caller's W3C
``traceparent`` when there is one, and sends its own span's ``traceparent`` upstream.
A request that arrives with a sampling decision keeps it. For a request without one,
``ENVIOS_ENVOY_TRACE_SAMPLING`` (percent, default 0) sets how many Envoy samples, so by
default only callers that send a sampled ``traceparent`` are traced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ops.envoy_policy import Json

COLLECTOR_CLUSTER = "otel_collector"
"""Name of the cluster that receives Envoy's spans."""

SAMPLING_VARIABLE = "ENVIOS_ENVOY_TRACE_SAMPLING"
"""Percentage (0-100) of requests without a sampling decision that Envoy samples."""

OTEL_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

DEFAULT_PORTS = {"grpc": 4317, "http/protobuf": 4318}
"""OTLP's default collector ports per protocol."""


class EnvoyTracingError(ValueError):
    """An OTLP endpoint or sampling value that Envoy's tracer cannot use."""


@dataclass(frozen=True)
class EnvoyTracing:
    """Collector address of Envoy's tracer and its sampling share for undecided requests."""

    host: str
    """Collector address: an IP address or a DNS name."""
    port: int
    protocol: str = "grpc"
    """``grpc`` (OTLP over gRPC) or ``http/protobuf`` (OTLP over HTTP, path ``path``)."""
    path: str = "/v1/traces"
    sampling_percent: float = 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EnvoyTracing | None:
        """Return the tracer settings, or None when no OTLP endpoint is configured or
        ``OTEL_TRACES_EXPORTER`` names another exporter than ``otlp``.

        Raises:
            EnvoyTracingError: the endpoint is not a URL with a host, the protocol is
                unknown, or the sampling percentage is not a number from 0 to 100.
        """
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "otlp":
            return None
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        endpoint = traces_endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        if not endpoint:
            return None
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if protocol not in DEFAULT_PORTS:
            raise EnvoyTracingError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {protocol!r}"
            )
        parts = urlsplit(endpoint)
        if not parts.hostname:
            raise EnvoyTracingError(f"OTLP endpoint must be a URL with a host, got {endpoint!r}")
        # A signal-specific endpoint is the full URL; the general one is a base URL.
        path = parts.path if traces_endpoint else parts.path.rstrip("/") + "/v1/traces"
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[protocol],
            protocol=protocol,
            path=path or "/v1/traces",
            sampling_percent=_sampling_percent(environ.get(SAMPLING_VARIABLE, "")),
        )

    def connection_manager_tracing(self, service_name: str) -> Json:
        """Return the ``tracing`` block of an HTTP connection manager.

        ``service_name`` becomes the ``service.name`` of the spans this listener reports.
        """
        config: Json = {"@type": OTEL_CONFIG_TYPE, "service_name": service_name}
        if self.protocol == "grpc":
            config["grpc_service"] = {
                "envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                "timeout": "1s",
            }
        else:
            uri = f"http://{self.host}:{self.port}{self.path}"
            config["http_service"] = {
                "http_uri": {"uri": uri, "cluster": COLLECTOR_CLUSTER, "timeout": "1s"}
            }
        return {
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": config},
            "random_sampling": {"value": self.sampling_percent},
        }

    def collector_cluster(self) -> Json:
        """Return the cluster of the collector (HTTP/2 for OTLP over gRPC)."""
        endpoint = {"address": {"socket_address": {"address": self.host, "port_value": self.port}}}
        cluster: Json = {
            "name": COLLECTOR_CLUSTER,
            "type": "STATIC" if _is_ip(self.host) else "STRICT_DNS",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": COLLECTOR_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
            },
        }
        if self.protocol == "grpc":
            options = {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options
            }
        return cluster


def _sampling_percent(raw: str) -> float:
    if not raw.strip():
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 100.0:
        raise EnvoyTracingError(
            f"{SAMPLING_VARIABLE} must be a percentage from 0 to 100, got {raw!r}"
        )
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
