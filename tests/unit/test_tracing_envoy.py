"""Envoy's tracer settings, the rendered tracing blocks, and OTEL_* in the stack's programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops import envoy_config
from ops.envoy_tracing import COLLECTOR_CLUSTER, EnvoyTracing, EnvoyTracingError
from ops.stack import Stack
from ops.topology import load_topology

GRPC_ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


def managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the HTTP connection manager of every listener."""
    return [
        listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in config["static_resources"]["listeners"]
    ]


def cluster_names(config: dict[str, Any]) -> list[str]:
    return [cluster["name"] for cluster in config["static_resources"]["clusters"]]


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_SDK_DISABLED": "true", **GRPC_ENDPOINT},
        {"OTEL_TRACES_EXPORTER": "none", **GRPC_ENDPOINT},
    ],
)
def test_envoy_tracing_off(environ: dict[str, str]) -> None:
    assert EnvoyTracing.from_env(environ) is None


def test_envoy_tracing_grpc_endpoint() -> None:
    tracing = EnvoyTracing.from_env(GRPC_ENDPOINT)

    assert tracing == EnvoyTracing("127.0.0.1", 4317, "grpc", "/v1/traces", 0.0)


def test_envoy_tracing_http_endpoints() -> None:
    base = EnvoyTracing.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    signal = EnvoyTracing.from_env(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9000/custom",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    )

    assert base == EnvoyTracing("localhost", 4318, "http/protobuf", "/v1/traces", 0.0)
    assert signal == EnvoyTracing("127.0.0.1", 9000, "http/protobuf", "/custom", 0.0)


def test_envoy_tracing_sampling_knob() -> None:
    tracing = EnvoyTracing.from_env({**GRPC_ENDPOINT, "ENVIOS_ENVOY_TRACE_SAMPLING": "100"})

    assert tracing is not None
    assert tracing.sampling_percent == 100.0


@pytest.mark.parametrize(
    "environ",
    [
        {**GRPC_ENDPOINT, "ENVIOS_ENVOY_TRACE_SAMPLING": "150"},
        {**GRPC_ENDPOINT, "ENVIOS_ENVOY_TRACE_SAMPLING": "all"},
        {**GRPC_ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"},
    ],
)
def test_envoy_tracing_rejects_invalid(environ: dict[str, str]) -> None:
    with pytest.raises(EnvoyTracingError):
        EnvoyTracing.from_env(environ)


def test_render_without_tracing() -> None:
    config = envoy_config.render(load_topology())

    assert all("tracing" not in manager for manager in managers(config))
    assert COLLECTOR_CLUSTER not in cluster_names(config)


def test_render_with_tracing() -> None:
    tracing = EnvoyTracing.from_env({**GRPC_ENDPOINT, "ENVIOS_ENVOY_TRACE_SAMPLING": "100"})

    config = envoy_config.render(load_topology(), tracing=tracing)

    names = []
    for manager in managers(config):
        provider = manager["tracing"]["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == (
            COLLECTOR_CLUSTER
        )
        assert manager["tracing"]["random_sampling"] == {"value": 100.0}
        names.append(provider["typed_config"]["service_name"])
    assert names == ["envoy-front", "envoy-grpc"]
    collector = config["static_resources"]["clusters"][-1]
    assert collector["name"] == COLLECTOR_CLUSTER
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4317}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tracing_config_validates(tmp_path: Path, protocol: str) -> None:
    environ = {**GRPC_ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    path = tmp_path / "envoy.yaml"

    envoy_config.write(load_topology(), path, tracing=EnvoyTracing.from_env(environ))

    envoy_config.validate(path)


def test_stack_passes_otel_variables(tmp_path: Path) -> None:
    environ = {**GRPC_ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "200", "UNRELATED": "x"}
    stack = Stack(load_topology(), tmp_path / "state", environ)

    groups = ("services", "workers", "gateways")
    applications = [program for program in stack.programs() if program.group in groups]

    assert {program.group for program in applications} == set(groups)
    for program in applications:
        assert program.environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
        assert program.environment["OTEL_BSP_SCHEDULE_DELAY"] == "200"
        assert "UNRELATED" not in program.environment
