"""Run one status projector: ``python -m services.projector``."""

from __future__ import annotations

import logging
import os
import signal
import sys

from services.common.config import ConfigError, describe
from services.common.logs import configure_logging
from services.projector.config import ProjectorConfig
from services.projector.consumer import ProjectorConsumer

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        config = ProjectorConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"projector: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.log_level, "projector", config.replica)
    logger.info("starting status projector with %s", describe(config))
    consumer = ProjectorConsumer(config)
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    consumer.run()
    logger.info("projector %s stopped", config.replica)


if __name__ == "__main__":
    main()
