"""Task worker and TaskService settings, and the task queue names."""

import pytest

from services.common.amqp import DEFAULT_NAMES, TaskQueueNames
from services.common.config import ConfigError
from services.task.app import TaskConfig
from services.task.settings import WorkerConfig


def test_worker_defaults_fit_consumer_timeout() -> None:
    config = WorkerConfig.from_env({})
    hold_s = config.tasks.retry.longest_hold_s(config.tasks.task_timeout_s)
    assert hold_s <= config.consumer_timeout_s / 2
    assert config.tasks.namespace == ""
    assert config.metrics_address == ""


def test_worker_rejects_long_hold() -> None:
    with pytest.raises(ConfigError, match="consumer timeout"):
        WorkerConfig.from_env({"ENVIOS_TASK_TIMEOUT_S": "600"})


def test_worker_reads_task_settings() -> None:
    config = WorkerConfig.from_env(
        {
            "ENVIOS_TASK_NAMESPACE": "t1",
            "ENVIOS_TASK_TIME_SCALE": "0.1",
            "ENVIOS_TASK_MAX_ATTEMPTS": "5",
            "ENVIOS_TASK_TIMEOUT_S": "60",
            "ENVIOS_AMQP_HEARTBEAT_S": "2",
            "ENVIOS_METRICS_ADDRESS": "127.0.0.1:9464",
        }
    )
    assert config.tasks.names.queue == "envios.tasks.t1"
    assert config.tasks.time_scale == 0.1
    assert config.tasks.retry.max_attempts == 5
    assert config.heartbeat_s == 2
    assert config.metrics_address == "127.0.0.1:9464"


def test_task_settings_problems_reported() -> None:
    with pytest.raises(ConfigError) as raised:
        TaskConfig.from_env(
            {
                "ENVIOS_TASK_NAMESPACE": "Bad Name",
                "ENVIOS_TASK_TIME_SCALE": "50",
                "ENVIOS_TASK_RUN_SLOTS": "0",
            }
        )
    problems = " ".join(raised.value.problems)
    assert "ENVIOS_TASK_NAMESPACE" in problems
    assert "ENVIOS_TASK_TIME_SCALE" in problems
    assert "ENVIOS_TASK_RUN_SLOTS" in problems


def test_default_names_unchanged() -> None:
    assert DEFAULT_NAMES.queue == "envios.tasks"
    assert DEFAULT_NAMES.routing_key == "task"
    assert DEFAULT_NAMES.dead_letter_exchange == "envios.tasks.dlx"
    assert DEFAULT_NAMES.dead_letter_queue == "envios.tasks.dead"


def test_namespace_separates_names() -> None:
    names = TaskQueueNames("ns")
    assert names.exchange == DEFAULT_NAMES.exchange
    assert names.queue == "envios.tasks.ns"
    assert names.routing_key == "task.ns"
    assert names.dead_letter_queue == "envios.tasks.ns.dead"
    assert names.dead_letter_notify_queue == "envios.tasks.ns.dead.notify"


@pytest.mark.parametrize(
    ("percent", "primary", "secondary"), [(0, 10, 0), (1, 10, 10), (50, 10, 10), (100, 0, 10)]
)
def test_priority_follows_split(percent: int, primary: int, secondary: int) -> None:
    primary_worker = WorkerConfig.from_env(
        {"ENVIOS_WORKER_PRIORITY": "10", "ENVIOS_WORKER_SHIFTED_PRIORITY": "0"}
    )
    secondary_worker = WorkerConfig.from_env(
        {"ENVIOS_WORKER_PRIORITY": "0", "ENVIOS_WORKER_SHIFTED_PRIORITY": "10"}
    )

    assert primary_worker.priority_for(percent) == primary
    assert secondary_worker.priority_for(percent) == secondary


def test_priority_without_shifted_value_fixed() -> None:
    config = WorkerConfig.from_env({"ENVIOS_WORKER_PRIORITY": "7"})

    assert config.shifted_priority is None
    assert config.traffic_admin_url == ""
    assert [config.priority_for(percent) for percent in (0, 50, 100)] == [7, 7, 7]


def test_traffic_settings_checked() -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerConfig.from_env(
            {
                "ENVIOS_WORKER_SHIFTED_PRIORITY": "256",
                "ENVIOS_TRAFFIC_ADMIN_URL": "127.0.0.1:9901",
                "ENVIOS_TRAFFIC_POLL_S": "0",
            }
        )

    message = str(raised.value)
    assert "ENVIOS_WORKER_SHIFTED_PRIORITY must be at most 255, got 256" in message
    assert "ENVIOS_TRAFFIC_ADMIN_URL must be a URL with scheme http" in message
    assert "ENVIOS_TRAFFIC_POLL_S must be more than 0 s, got 0" in message
