"""Run one StatusService replica: ``python -m services.status``."""

from services.common.runner import run_service
from services.status.app import StatusApp
from services.status.config import StatusConfig

if __name__ == "__main__":
    run_service("status", StatusConfig.from_env, StatusApp, lambda app: [app.metrics.registry])
