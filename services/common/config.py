"""Process configuration read from environment variables.

Every process builds one frozen dataclass from a mapping (``os.environ`` in ``main``,
a plain dict in tests). Problems are collected and reported together, so a bad deployment
shows all of its mistakes in one start-up error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

PREFIX = "ENVIOS_"
"""Prefix of every variable the project reads, except REDIS_URL and AMQP_URL."""


class ConfigError(ValueError):
    """Raised when configuration is missing or invalid; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


class EnvReader:
    """Read typed values out of an environment mapping, collecting problems."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name, default)
        if value is None or value == "":
            self.problems.append(f"{name} is required")
            return ""
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        return self._parse(name, default, int, lambda v: v >= minimum, f"an integer >= {minimum}")

    def seconds(self, name: str, default: float) -> float:
        return self._parse(name, default, float, lambda v: v >= 0, "a number of seconds >= 0")

    def address(self, name: str, default: str | None = None) -> str:
        """Read a ``host:port`` address."""
        value = self.text(name, default)
        host, _, port = value.rpartition(":")
        if value and (not host or not port.isdigit() or not 0 <= int(port) <= 65535):
            self.problems.append(f"{name} must be host:port, got {value!r}")
        return value

    def url(self, name: str, schemes: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(name, default)
        if value and urlsplit(value).scheme not in schemes:
            self.problems.append(
                f"{name} must be a URL with scheme {' or '.join(schemes)}, got {value!r}"
            )
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value and value not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def check(self) -> None:
        """Raise ConfigError if any value read so far was missing or invalid."""
        if self.problems:
            raise ConfigError(self.problems)

    def _parse(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        valid: Callable[[T], bool],
        expected: str,
    ) -> T:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = parse(raw)
        except ValueError:
            self.problems.append(f"{name} must be {expected}, got {raw!r}")
            return default
        if not valid(value):
            self.problems.append(f"{name} must be {expected}, got {raw!r}")
            return default
        return value


@dataclass(frozen=True)
class ServerConfig:
    """Settings every gRPC service process shares."""

    listen_address: str
    """``host:port`` to serve gRPC on; port 0 picks a free port (tests use it)."""
    site: str
    """Name of the site this replica belongs to, reported in logs and the status overview."""
    replica: str
    """Name of this replica, for example ``shipment-primary-1``."""
    max_concurrent_rpcs: int = 500
    """RPCs served at once; the excess is rejected at once with RESOURCE_EXHAUSTED."""
    shutdown_grace_s: float = 10.0
    """Seconds in-flight RPCs get to finish after SIGTERM before they are cancelled."""
    drain_s: float = 1.0
    """Seconds between reporting NOT_SERVING and refusing new RPCs, so Envoy routes away first."""
    log_level: str = "INFO"
    """Root log level name."""

    @classmethod
    def read(cls, env: EnvReader, service: str) -> ServerConfig:
        return cls(
            listen_address=env.address(PREFIX + "LISTEN_ADDRESS", "127.0.0.1:0"),
            site=env.text(PREFIX + "SITE", "primary"),
            replica=env.text(PREFIX + "REPLICA", f"{service}-local"),
            max_concurrent_rpcs=env.integer(PREFIX + "MAX_CONCURRENT_RPCS", 500, minimum=1),
            shutdown_grace_s=env.seconds(PREFIX + "SHUTDOWN_GRACE_S", 10.0),
            drain_s=env.seconds(PREFIX + "DRAIN_S", 1.0),
            log_level=env.choice(
                PREFIX + "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"
            ),
        )


def read_database_url(env: EnvReader) -> str:
    """Read the database URL: ``sqlite:///absolute/path.db`` (default store) or ``postgresql://``."""
    return env.url(PREFIX + "DATABASE_URL", ("sqlite", "postgresql"), "sqlite:///envios.db")


def read_redis_url(env: EnvReader) -> str:
    return env.url("REDIS_URL", ("redis", "rediss", "unix"), "redis://127.0.0.1:6390/0")


def read_amqp_url(env: EnvReader) -> str:
    return env.url("AMQP_URL", ("amqp", "amqps"), "amqp://guest:guest@127.0.0.1:5673/%2F")


def read_upstream(env: EnvReader) -> str:
    """Read the gRPC target that reaches the other services: Envoy's gRPC listener."""
    return env.address(PREFIX + "UPSTREAM_GRPC", "127.0.0.1:9090")


def describe(config: Any) -> dict[str, Any]:
    """Return the configuration as a dict for a start-up log line, with URL passwords hidden."""
    shown = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = describe(value)
        elif isinstance(value, str) and "@" in value and "://" in value:
            parts = urlsplit(value)
            value = value.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2])
        shown[item.name] = value
    return shown
