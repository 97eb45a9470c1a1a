"""Run one TaskService replica: ``python -m services.task``."""

from services.common.runner import run_service
from services.task.app import TaskApp, TaskConfig

if __name__ == "__main__":
    run_service("task", TaskConfig.from_env, TaskApp)
