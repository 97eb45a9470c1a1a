"""The rendered supervisord.conf, read back with supervisor's own config parser."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
from supervisor.options import ServerOptions

from ops.provision import prepare_state
from ops.stack import Stack, stack_from_environ
from ops.topology import GRPC_SERVICE_NAMES, load_topology
from services.common.config import ConfigError

EPMD_PORT = 4999
GIVEN_REDIS_URL = "redis://127.0.0.1:7001/2"
GIVEN_AMQP_URL = "amqp://user:secret@127.0.0.1:7002/%2F"


def make_stack(tmp_path: Path, environ: dict[str, str] | None = None, **kwargs: Any) -> Stack:
    stack = Stack(load_topology(), tmp_path / "state", environ or {}, **kwargs)
    stack.epmd_port = EPMD_PORT
    return stack


def parse(stack: Stack) -> dict[str, Any]:
    """Render the stack's config to disk and return supervisor's view: program -> config."""
    stack.logs_dir.mkdir(parents=True, exist_ok=True)
    stack.conf_path.write_text(stack.render_supervisord_conf(), encoding="utf-8")
    options = ServerOptions()
    options.configfile = str(stack.conf_path)
    options.process_config(do_usage=False)
    return {
        process.name: process
        for group in options.process_group_configs
        for process in group.process_configs
    }


def group_priorities(stack: Stack) -> dict[str, int]:
    parser = configparser.RawConfigParser()
    parser.read_string(stack.render_supervisord_conf())
    return {
        section.removeprefix("group:"): parser.getint(section, "priority")
        for section in parser.sections()
        if section.startswith("group:")
    }


def test_conf_has_every_process(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    topology = stack.topology
    expected = {"epmd", "redis", "rabbitmq", "envoy"}
    expected |= {replica.name for replica in topology.replicas()}
    expected |= {
        f"worker-{site.name}-{i}" for site in topology.sites for i in range(1, site.workers + 1)
    }
    expected |= {f"gateway-{i}" for i in range(1, len(topology.gateway_ports) + 1)}
    expected |= {f"projector-{site.name}" for site in topology.sites}

    programs = parse(stack)

    assert set(programs) == expected
    assert len(programs) == 4 + 12 + 2 + 2 + 2


def test_conf_replica_environment(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, {"ENVIOS_LOG_LEVEL": "DEBUG"})
    programs = parse(stack)

    for replica in stack.topology.replicas():
        program = programs[replica.name]
        environment = program.environment
        assert program.command.split()[1:] == ["-m", f"services.{replica.service}"]
        assert environment["ENVIOS_LISTEN_ADDRESS"] == f"127.0.0.1:{replica.port}"
        assert environment["ENVIOS_SITE"] == replica.site
        assert environment["ENVIOS_REPLICA"] == replica.name
        assert environment["ENVIOS_DATABASE_URL"] == f"sqlite:///{stack.state_dir}/envios.db"
        assert environment["ENVIOS_UPSTREAM_GRPC"] == f"127.0.0.1:{stack.topology.grpc_port}"
        assert environment["ENVIOS_MAX_CONCURRENT_RPCS"] == "500"
        assert environment["ENVIOS_LOG_LEVEL"] == "DEBUG"
        assert environment["REDIS_URL"] == f"redis://127.0.0.1:{stack.topology.redis_port}/0"
        assert (
            environment["AMQP_URL"]
            == f"amqp://guest:guest@127.0.0.1:{stack.topology.amqp_port}/%2F"
        )


def test_conf_worker_environment(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    program = parse(stack)["worker-secondary-1"]

    assert program.command.split()[1:] == ["-m", "services.task.worker"]
    assert program.environment["ENVIOS_SITE"] == "secondary"
    assert program.environment["ENVIOS_UPSTREAM_GRPC"] == stack.grpc_target
    assert "ENVIOS_LISTEN_ADDRESS" not in program.environment


def test_conf_gateway_environment(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    programs = parse(stack)

    for index, port in enumerate(stack.topology.gateway_ports, start=1):
        environment = programs[f"gateway-{index}"].environment
        assert environment["ENVIOS_LISTEN_ADDRESS"] == f"127.0.0.1:{port}"
        assert environment["ENVIOS_MAX_CONCURRENT_REQUESTS"] == "500"
        assert environment["ENVIOS_UPSTREAM_GRPC"] == stack.grpc_target


def test_conf_envoy_uses_state_config(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    command = parse(stack)["envoy"].command.split()

    assert command[command.index("-c") + 1] == str(stack.envoy_config_path)


def test_conf_data_tier_loopback(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    topology = stack.topology
    programs = parse(stack)
    prepare_state(stack.state_dir, topology, stack.data_tier)

    redis_command = programs["redis"].command.split()
    assert redis_command[redis_command.index("--bind") + 1] == "127.0.0.1"
    assert redis_command[redis_command.index("--port") + 1] == str(topology.redis_port)
    epmd_command = programs["epmd"].command.split()
    assert epmd_command[epmd_command.index("-address") + 1] == "127.0.0.1"
    assert epmd_command[epmd_command.index("-port") + 1] == str(EPMD_PORT)
    environment = programs["rabbitmq"].environment
    assert environment["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    assert environment["ERL_EPMD_ADDRESS"] == "127.0.0.1"
    assert environment["ERL_EPMD_PORT"] == str(EPMD_PORT)
    assert (
        "inet_dist_use_interface {127,0,0,1}" in environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    )
    assert environment["RABBITMQ_DIST_PORT"] == str(topology.amqp_dist_port)
    assert environment["HOME"].startswith(str(stack.state_dir))
    rabbitmq_conf = Path(environment["RABBITMQ_CONFIG_FILE"]).read_text(encoding="utf-8")
    assert f"listeners.tcp.default = 127.0.0.1:{topology.amqp_port}" in rabbitmq_conf
    plugins = Path(environment["RABBITMQ_ENABLED_PLUGINS_FILE"]).read_text(encoding="utf-8")
    assert plugins.strip() == "[]."


def test_conf_state_paths(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    parser = configparser.RawConfigParser()
    parser.read_string(stack.render_supervisord_conf())

    assert parser.get("unix_http_server", "file") == str(stack.socket_path)
    assert parser.get("unix_http_server", "chmod") == "0700"
    assert parser.get("supervisord", "pidfile") == str(stack.pidfile)
    assert parser.get("program:redis", "stdout_logfile") == str(stack.logs_dir / "redis.log")


def test_conf_no_autorestart(tmp_path: Path) -> None:
    programs = parse(make_stack(tmp_path))

    restarting = [name for name, program in programs.items() if program.autorestart]
    assert restarting == []


def test_conf_stop_wait_covers_grace(tmp_path: Path) -> None:
    environ = {"ENVIOS_SHUTDOWN_GRACE_S": "20", "ENVIOS_DRAIN_S": "2"}
    programs = parse(make_stack(tmp_path, environ))

    assert programs["shipment-primary-1"].stopwaitsecs > 22
    assert programs["gateway-1"].stopwaitsecs > 22
    assert programs["worker-primary-1"].stopwaitsecs > 22


def test_conf_invalid_grace_rejected(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, {"ENVIOS_SHUTDOWN_GRACE_S": "soon"})

    with pytest.raises(ConfigError, match="ENVIOS_SHUTDOWN_GRACE_S"):
        stack.render_supervisord_conf()


def test_conf_start_order(tmp_path: Path) -> None:
    priorities = group_priorities(make_stack(tmp_path))

    assert priorities["epmd"] < priorities["data"] < priorities["services"]
    assert priorities["services"] < priorities["workers"] < priorities["proxy"]
    assert priorities["proxy"] < priorities["gateways"]


def test_conf_given_urls_start_nothing(tmp_path: Path) -> None:
    environ = {"REDIS_URL": GIVEN_REDIS_URL, "AMQP_URL": GIVEN_AMQP_URL}
    programs = parse(make_stack(tmp_path, environ))

    assert {"redis", "rabbitmq", "epmd"}.isdisjoint(programs)
    assert programs["status-primary-1"].environment["REDIS_URL"] == GIVEN_REDIS_URL
    assert programs["task-secondary-2"].environment["AMQP_URL"] == GIVEN_AMQP_URL


def test_conf_escapes_environment(tmp_path: Path) -> None:
    awkward = 'redis://:p%a"s s\\w,d@127.0.0.1:7001/0'
    programs = parse(make_stack(tmp_path, {"REDIS_URL": awkward}))

    assert programs["shipment-primary-1"].environment["REDIS_URL"] == awkward


def test_conf_rejects_unquotable_value(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, {"REDIS_URL": "redis://:a'b\"c@127.0.0.1:7001/0"})

    with pytest.raises(ValueError, match="REDIS_URL"):
        stack.render_supervisord_conf()


def test_conf_data_only(tmp_path: Path) -> None:
    programs = parse(make_stack(tmp_path, data_only=True))

    assert set(programs) == {"epmd", "redis", "rabbitmq"}


def test_stack_probes_every_server(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)

    probes = stack.probes()

    assert {replica.name for replica in stack.topology.replicas()} <= set(probes)
    assert {"redis", "rabbitmq", "envoy", "gateway-1", "gateway-2"} <= set(probes)
    assert len(GRPC_SERVICE_NAMES) == 3


def test_stack_from_environ(tmp_path: Path) -> None:
    topology = Path(__file__).resolve().parents[2] / "envoy" / "topology.toml"
    environ = {"ENVIOS_STATE_DIR": str(tmp_path / "here"), "ENVIOS_TOPOLOGY": str(topology)}

    stack = stack_from_environ(environ)

    assert stack.state_dir == tmp_path / "here"
    assert stack.database_url == f"sqlite:///{tmp_path}/here/envios.db"
    assert stack.front_http_url == "http://127.0.0.1:8080"
    assert stack.grpc_target == "127.0.0.1:9090"
    assert stack.envoy_admin_url == "http://127.0.0.1:9901"


def test_stack_status_when_down(tmp_path: Path) -> None:
    status = make_stack(tmp_path).status()

    assert status["up"] is False
    assert status["processes"] == []
    assert status["amqp_url"].startswith("amqp://guest:***@127.0.0.1:")
