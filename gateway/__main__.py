"""Entry point: ``python -m gateway``, configured by ``ENVIOS_*`` environment variables."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace

from gateway.app import GatewayApp
from gateway.bindings import BindingError
from gateway.config import GatewayConfig
from gateway.descriptors import DescriptorSetError
from gateway.server import serve
from services.common.config import ConfigError, describe
from services.common.logs import configure_logging
from services.common.metrics import MetricsConfig, start_process_metrics
from services.common.tracing import shutdown_tracing, start_tracing

logger = logging.getLogger("gateway")


def main() -> int:
    """Run one gateway until SIGTERM; return the process exit status."""
    try:
        config = GatewayConfig.from_env(os.environ)
        # Gateways serve both sites, so their metrics name no site.
        metrics_config = replace(MetricsConfig.from_env(os.environ, "gateway"), site="")
    except ConfigError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, "gateway", config.replica)
    logger.info("configuration: %s", describe(config))
    # Gateways serve both sites, so their spans name no site.
    start_tracing("gateway", config.replica)
    try:
        app = GatewayApp(config)
    except (BindingError, DescriptorSetError) as error:
        logger.error("cannot load the HTTP bindings: %s", error)
        return 2
    start_process_metrics(metrics_config)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, app))
    finally:
        shutdown_tracing()
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when uvloop is installed; it serves HTTP faster."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
