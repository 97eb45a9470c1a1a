"""Configuration of one gateway process, read from environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import PREFIX, EnvReader, read_upstream

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
