"""Configuration of one gateway process, read from environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import PREFIX, EnvReader, read_upstream

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ROUTE_ORDERS = ("grpc-gateway", "specificity")
PATH_UNESCAPING_MODES = ("legacy", "all-characters")
PATH_FIELDS_IN_QUERY = ("ignore", "override")
GATEWAY_PREFIX = PREFIX + "GATEWAY_"


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of the HTTP/JSON gateway."""

    listen_address: str = "127.0.0.1:0"
    """``host:port`` to serve HTTP on; port 0 picks a free port (tests use it)."""
    upstream_grpc: str = "127.0.0.1:9090"
    """``host:port`` of the gRPC endpoint every call goes to: Envoy's gRPC listener."""
    replica: str = "gateway-local"
    """Name of this gateway process, for example ``gateway-1``; shown in logs."""
    max_concurrent_requests: int = 500
    """Requests handled at once; the excess is rejected at once with HTTP 429.

    The local stack passes ``[gateway] max_concurrent_requests`` of the topology here, the
    same number Envoy's front listener allows each gateway, so behind Envoy the excess
    waits at Envoy and this limit mainly guards callers that bypass Envoy.
    """
    max_body_bytes: int = 1024 * 1024
    """Largest accepted request body; a larger one is rejected with HTTP 413."""
    max_header_bytes: int = 64 * 1024
    """Largest accepted request head (request line and headers); a larger one gets HTTP 431.

    Go's net/http, under grpc-gateway, allows 1 MiB by default; Envoy allows 60 KiB.
    """
    header_timeout_s: float = 10.0
    """Seconds a client gets to send a request's line and headers, counted from the moment
    the connection opened or the previous response ended. A slower client is disconnected."""
    body_timeout_s: float = 30.0
    """Seconds a client gets to send the whole request body; a slower one gets HTTP 408."""
    keep_alive_s: float = 5.0
    """Seconds an idle keep-alive connection stays open."""
    descriptor_set: str = ""
    """Path of a binary ``FileDescriptorSet`` to serve; empty serves the envios protos."""
    services: tuple[str, ...] = ()
    """Full names of the services to serve from ``descriptor_set``; empty serves all."""
    route_order: str = "grpc-gateway"
    """Precedence among templates that match one path: ``grpc-gateway`` (the one declared
    last wins) or ``specificity`` (literal before ``*`` before ``**``, as Envoy's transcoder)."""
    path_unescaping: str = "legacy"
    """Decoding of percent-escapes in the path, ``legacy`` or ``all-characters``.

    ``legacy`` is grpc-gateway's default: the whole path is decoded before routing, so
    ``%2F`` separates segments. ``all-characters`` is Envoy's ``url_unescape_spec:
    ALL_CHARACTERS``: the path is split first and each segment decoded, so ``%2F`` becomes
    a ``/`` inside a variable's value."""
    path_fields_in_query: str = "ignore"
    """Effect of a query parameter that names a field bound by the path: ``ignore`` drops
    it (grpc-gateway), ``override`` replaces the path value (Envoy's transcoder)."""
    default_timeout_s: float = 60.0
    """Deadline of an upstream call when the request has no ``Grpc-Timeout`` header."""
    shutdown_grace_s: float = 10.0
    """Seconds in-flight requests get to finish after SIGTERM before they are cancelled."""
    drain_s: float = 1.0
    """Seconds between ``/healthz`` turning 503 and the listener closing, for Envoy to notice."""
    log_level: str = "INFO"
    """Root log level name."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewayConfig:
        """Build the configuration from an environment mapping.

        Raises:
            ConfigError: listing every missing or invalid variable.
        """
        env = EnvReader(environ)
        config = cls(
            listen_address=env.address(PREFIX + "LISTEN_ADDRESS", "127.0.0.1:0"),
            upstream_grpc=read_upstream(env),
            replica=env.text(PREFIX + "REPLICA", "gateway-local"),
            max_concurrent_requests=env.integer(PREFIX + "MAX_CONCURRENT_REQUESTS", 500, minimum=1),
            max_body_bytes=env.integer(PREFIX + "MAX_BODY_BYTES", 1024 * 1024, minimum=1),
            max_header_bytes=env.integer(PREFIX + "MAX_HEADER_BYTES", 64 * 1024, minimum=1024),
            header_timeout_s=env.seconds(PREFIX + "HEADER_TIMEOUT_S", 10.0),
            body_timeout_s=env.seconds(PREFIX + "BODY_TIMEOUT_S", 30.0),
            keep_alive_s=env.seconds(PREFIX + "KEEP_ALIVE_S", 5.0),
            descriptor_set=environ.get(GATEWAY_PREFIX + "DESCRIPTOR_SET", ""),
            services=_names(environ.get(GATEWAY_PREFIX + "SERVICES", "")),
            route_order=env.choice(GATEWAY_PREFIX + "ROUTE_ORDER", ROUTE_ORDERS, "grpc-gateway"),
            path_unescaping=env.choice(
                GATEWAY_PREFIX + "PATH_UNESCAPING", PATH_UNESCAPING_MODES, "legacy"
            ),
            path_fields_in_query=env.choice(
                GATEWAY_PREFIX + "PATH_FIELDS_IN_QUERY", PATH_FIELDS_IN_QUERY, "ignore"
            ),
            default_timeout_s=env.seconds(PREFIX + "DEFAULT_TIMEOUT_S", 60.0),
            shutdown_grace_s=env.seconds(PREFIX + "SHUTDOWN_GRACE_S", 10.0),
            drain_s=env.seconds(PREFIX + "DRAIN_S", 1.0),
            log_level=env.choice(PREFIX + "LOG_LEVEL", LOG_LEVELS, "INFO"),
        )
        env.check()
        return config

    @property
    def host(self) -> str:
        return self.listen_address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen_address.rpartition(":")[2])


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
