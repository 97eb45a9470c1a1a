"""Logging set-up for process entry points: JSON lines in Elastic Common Schema."""

from __future__ import annotations

import logging
import sys

import ecs_logging


def configure_logging(level: str, service: str, replica: str) -> None:
    """Send every log record to stderr as one ECS JSON line.

    Only ``main`` functions call this; library modules just use ``logging.getLogger``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ecs_logging.StdlibFormatter(extra={"service.name": service, "service.node.name": replica})
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every connection step at INFO; keep its warnings and errors.
    logging.getLogger("pika").setLevel(logging.WARNING)
