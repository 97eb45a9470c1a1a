"""Unit tests of the gateway's environment configuration."""

from __future__ import annotations

import pytest

from gateway.config import GatewayConfig
from services.common.config import ConfigError


def test_config_defaults_follow_grpc_gateway() -> None:
    config = GatewayConfig.from_env({})

    assert config.route_order == "grpc-gateway"
    assert config.path_unescaping == "legacy"
    assert config.path_fields_in_query == "ignore"


def test_config_envoy_options() -> None:
    config = GatewayConfig.from_env(
        {
            "ENVIOS_GATEWAY_ROUTE_ORDER": "specificity",
            "ENVIOS_GATEWAY_PATH_UNESCAPING": "all-characters",
            "ENVIOS_GATEWAY_PATH_FIELDS_IN_QUERY": "override",
        }
    )

    assert config.route_order == "specificity"
    assert config.path_unescaping == "all-characters"
    assert config.path_fields_in_query == "override"


def test_config_invalid_options_listed_together() -> None:
    environ = {
        "ENVIOS_GATEWAY_PATH_UNESCAPING": "some",
        "ENVIOS_GATEWAY_PATH_FIELDS_IN_QUERY": "merge",
    }

    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env(environ)

    assert "ENVIOS_GATEWAY_PATH_UNESCAPING" in str(raised.value)
    assert "ENVIOS_GATEWAY_PATH_FIELDS_IN_QUERY" in str(raised.value)
