"""Session fixtures that start real servers with the same code as ``envios up``.

``data_tier`` runs one Redis and one RabbitMQ for the whole test session, or uses
``REDIS_URL`` / ``AMQP_URL`` when they are set. ``stack`` runs every other process of the
stack on top of it, so a session starts at most one RabbitMQ node. Both listen on free
ports and keep their files in pytest's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.provision import wait_amqp, wait_redis
from ops.stack import Stack
from ops.topology import load_topology

DATA_TIER_UP_TIMEOUT_S = 60.0
"""Time Redis and RabbitMQ have to respond; RabbitMQ alone needs several seconds to boot."""

STACK_UP_TIMEOUT_S = 120.0
"""Time every process of the full stack has to become ready."""


@dataclass(frozen=True)
class DataTier:
    """Where the session's Redis and RabbitMQ are."""

    redis_url: str
    amqp_url: str
    stack: Stack | None
    """The data-only stack that runs them, or None when both came from the environment."""


def base_environ() -> dict[str, str]:
    """Return this process's environment without empty ``REDIS_URL`` / ``AMQP_URL``."""
    environ = dict(os.environ)
    for name in ("REDIS_URL", "AMQP_URL"):
        if not environ.get(name):
            environ.pop(name, None)
    return environ


@pytest.fixture(scope="session")
def data_tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataTier]:
    """Redis and RabbitMQ for integration tests, stopped at the end of the session."""
    environ = base_environ()
    if "REDIS_URL" in environ and "AMQP_URL" in environ:
        wait_redis(environ["REDIS_URL"], DATA_TIER_UP_TIMEOUT_S)
        wait_amqp(environ["AMQP_URL"], DATA_TIER_UP_TIMEOUT_S)
        yield DataTier(environ["REDIS_URL"], environ["AMQP_URL"], None)
        return
    state_dir = tmp_path_factory.mktemp("data-tier")
    stack = Stack(load_topology().with_free_ports(), state_dir, environ, data_only=True)
    try:
        stack.up(timeout_s=DATA_TIER_UP_TIMEOUT_S)
        yield DataTier(stack.redis_url, stack.amqp_url, stack)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack(data_tier: DataTier, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack (Envoy, services, workers, gateways) on the session's data tier."""
    environ = base_environ()
    environ["REDIS_URL"] = data_tier.redis_url
    environ["AMQP_URL"] = data_tier.amqp_url
    state_dir: Path = tmp_path_factory.mktemp("stack")
    running = Stack(load_topology().with_free_ports(), state_dir, environ)
    try:
        running.up(timeout_s=STACK_UP_TIMEOUT_S)
        yield running
    finally:
        running.down()
