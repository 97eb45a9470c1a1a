"""Entry point: ``python -m gateway``, configured by ``ENVIOS_*`` environment variables."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from gateway.config import GatewayConfig
from gateway.server import serve
from services.common.config import ConfigError, describe
from services.common.logs import configure_logging

logger = logging.getLogger("gateway")


def main() -> int:
    """Run one gateway until SIGTERM; return the process exit status."""
    try:
        config = GatewayConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, "gateway", config.replica)
    logger.info("configuration: %s", describe(config))
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
