"""Entry point shared by the service mains: configuration, logging, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from services.common.config import ConfigError, describe
from services.common.logs import configure_logging
from services.common.server import GrpcServer, ServiceApp, serve_until_signal

logger = logging.getLogger(__name__)

C = TypeVar("C")


def run_service(
    service: str,
    load_config: Callable[[Mapping[str, str]], C],
    make_app: Callable[[C], ServiceApp],
) -> None:
    """Read the configuration from the environment and serve until SIGTERM or SIGINT.

    Exits with status 2 and one message listing every problem when the configuration is
    invalid.
    """
    try:
        config: Any = load_config(os.environ)
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.server.log_level, service, config.server.replica)
    logger.info("starting %s with %s", service, describe(config))

    async def serve() -> None:
        # grpc.aio binds the server to the running loop, so build it inside that loop.
        await serve_until_signal(GrpcServer(config.server, make_app(config)))

    asyncio.run(serve())
