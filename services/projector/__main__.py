"""Run one status projector: ``python -m services.projector``."""

from __future__ import annotations

import logging
import os
import signal
import sys

from services.common.config import ConfigError, describe
from services.common.logs import configure_logging
from services.common.metrics import MetricsConfig, start_process_metrics
from services.common.tracing import shutdown_tracing, start_tracing
from services.projector.config import ProjectorConfig
from services.projector.consumer import ProjectorConsumer

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        config = ProjectorConfig.from_env(os.environ)
        metrics_config = MetricsConfig.from_env(os.environ, "projector")
    except ConfigError as error:
        print(f"projector: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.log_level, "projector", config.replica)
    logger.info("starting status projector with %s", describe(config))
    start_tracing("projector", config.replica, config.site)
    consumer = ProjectorConsumer(config)
    start_process_metrics(metrics_config, [consumer.metrics.registry])
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    try:
        consumer.run()
    finally:
        shutdown_tracing()
    logger.info("projector %s stopped", config.replica)


if __name__ == "__main__":
    main()
