"""Unit tests of StatusConfig.from_env."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.status.config import StatusConfig


def test_status_config_defaults() -> None:
    config = StatusConfig.from_env({})
    assert config.cache_ttl_s == 300.0
    assert config.redis_timeout_s == 0.25
    assert config.server.replica == "status-local"


def test_status_config_values() -> None:
    config = StatusConfig.from_env(
        {
            "ENVIOS_SITE": "secondary",
            "ENVIOS_DATABASE_URL": "sqlite:////tmp/x.db",
            "REDIS_URL": "redis://127.0.0.1:7001/0",
            "AMQP_URL": "amqp://guest:guest@127.0.0.1:5700/%2F",
            "ENVIOS_CACHE_TTL_S": "60",
            "ENVIOS_REDIS_TIMEOUT_S": "0.1",
        }
    )
    assert config.server.site == "secondary"
    assert config.database_url == "sqlite:////tmp/x.db"
    assert config.redis_url == "redis://127.0.0.1:7001/0"
    assert config.amqp_url == "amqp://guest:guest@127.0.0.1:5700/%2F"
    assert config.cache_ttl_s == 60.0
    assert config.redis_timeout_s == 0.1


def test_status_config_every_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        StatusConfig.from_env(
            {
                "ENVIOS_CACHE_TTL_S": "0",
                "ENVIOS_REDIS_TIMEOUT_S": "soon",
                "AMQP_URL": "http://127.0.0.1:1",
            }
        )
    problems = " ".join(raised.value.problems)
    assert "ENVIOS_CACHE_TTL_S" in problems
    assert "ENVIOS_REDIS_TIMEOUT_S" in problems
    assert "AMQP_URL" in problems
