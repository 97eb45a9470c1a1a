"""Configuration parsing from environment mappings."""

import pytest

from services.common.config import ConfigError, describe
from services.shipment.app import ShipmentConfig
from services.task.worker import WorkerConfig


def test_defaults_from_empty_environment() -> None:
    config = ShipmentConfig.from_env({})
    assert config.server.max_concurrent_rpcs == 500
    assert config.server.listen_address == "127.0.0.1:0"
    assert config.database_url == "sqlite:///envios.db"


def test_values_are_read() -> None:
    config = ShipmentConfig.from_env(
        {
            "ENVIOS_LISTEN_ADDRESS": "127.0.0.1:5000",
            "ENVIOS_SITE": "secondary",
            "ENVIOS_MAX_CONCURRENT_RPCS": "20",
            "REDIS_URL": "redis://127.0.0.1:7000/1",
        }
    )
    assert config.server.listen_address == "127.0.0.1:5000"
    assert config.server.site == "secondary"
    assert config.server.max_concurrent_rpcs == 20
    assert config.redis_url == "redis://127.0.0.1:7000/1"


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        ShipmentConfig.from_env(
            {
                "ENVIOS_LISTEN_ADDRESS": "nowhere",
                "ENVIOS_MAX_CONCURRENT_RPCS": "0",
                "ENVIOS_SHUTDOWN_GRACE_S": "soon",
                "REDIS_URL": "http://127.0.0.1:1",
                "ENVIOS_LOG_LEVEL": "LOUD",
            }
        )
    problems = raised.value.problems
    assert len(problems) == 5
    assert any("ENVIOS_LISTEN_ADDRESS" in problem for problem in problems)
    assert any("ENVIOS_MAX_CONCURRENT_RPCS" in problem for problem in problems)
    assert any("ENVIOS_SHUTDOWN_GRACE_S" in problem for problem in problems)
    assert any("REDIS_URL" in problem for problem in problems)
    assert any("ENVIOS_LOG_LEVEL" in problem for problem in problems)


def test_worker_concurrency_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="ENVIOS_WORKER_CONCURRENCY"):
        WorkerConfig.from_env({"ENVIOS_WORKER_CONCURRENCY": "0"})


def test_describe_hides_url_passwords() -> None:
    config = WorkerConfig.from_env({"AMQP_URL": "amqp://user:secret@127.0.0.1:5672/%2F"})
    shown = describe(config)
    assert "secret" not in str(shown)
    assert shown["amqp_url"] == "amqp://***@127.0.0.1:5672/%2F"
