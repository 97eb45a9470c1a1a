"""The ``envios`` command: bring the local stack up and down, show it, provision, replay.

Every command exits 0 on success and 1 on failure, with a message on stderr that names
what failed and the next step. ``envios status`` also exits 1 when the stack is not up or a
process is not running or not healthy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ops import drill, envoy_config, grpc_call, key_numbers, replay, tasks_cli, traffic
from ops.provision import ProvisionError, ensure_packages, find_binary, rabbitmq_server_binary
from ops.stack import Stack, StackError, stack_from_environ
from ops.topology import TopologyError
from services.common.config import ConfigError

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]

HEALTHY = ("ok", "-")
"""Health values of a process that is fine: probe passed, or no probe (tracked by pid)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``envios`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    handler: Handler = args.handler
    try:
        return handler(args)
    except FileNotFoundError as error:
        logger.error("file not found: %s; check --topology / ENVIOS_TOPOLOGY", error.filename)
    except (
        StackError,
        ProvisionError,
        TopologyError,
        ConfigError,
        envoy_config.EnvoyConfigError,
        envoy_config.EnvoyNotFoundError,
    ) as error:
        logger.error("%s failed: %s", args.command, error)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``envios`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="envios", description="Run the envios stack locally: Envoy, services, Redis, RabbitMQ."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="directory of the stack's config, logs, sockets and database "
        "(default: $ENVIOS_STATE_DIR, else .envios/ in the repository)",
    )
    parser.add_argument(
        "--topology",
        type=Path,
        help="topology TOML file (default: $ENVIOS_TOPOLOGY, else envoy/topology.toml)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="level of the log lines on stderr (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_up(commands)
    _add_down(commands)
    _add_status(commands)
    provision = commands.add_parser(
        "provision",
        help="install missing redis-server / rabbitmq-server Debian packages",
        description="Install the Debian packages redis-server and rabbitmq-server when their "
        "binaries are missing (as root; otherwise print the sudo command). Servers given by "
        "REDIS_URL / AMQP_URL need no package. Starts nothing.",
    )
    provision.add_argument(
        "--test-tools",
        action="store_true",
        help="also install what the test suite runs: chromium, chromium-driver, prometheus, "
        "prometheus-blackbox-exporter",
    )
    provision.set_defaults(handler=_provision)
    replay_parser = commands.add_parser(
        "replay",
        help="replay an Olist orders CSV through the stack and verify the final states",
        description="Drive each order's timeline through the HTTP facade (create, then one "
        "PATCH per transition) and check every shipment's final status.",
    )
    replay.add_arguments(replay_parser)
    replay_parser.set_defaults(handler=_replay)
    call_parser = commands.add_parser(
        "call",
        help="call a gRPC method with JSON through Envoy, using server reflection",
        description="Resolve the method by server reflection, send the JSON request and print "
        "the response as JSON. Without a method, list the services.",
    )
    grpc_call.add_arguments(call_parser)
    call_parser.set_defaults(handler=_call)
    traffic.add_parser(commands, _stack)
    drill.add_parser(commands, _stack)
    tasks_cli.add_parser(commands, _stack)
    return parser


def _add_up(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="start the whole stack and wait until it is ready",
        description="Render the Envoy and supervisord configuration into the state directory, "
        "start supervisord and wait until every process is ready. Does nothing when the "
        "stack of this state directory is already up.",
    )
    up.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="seconds to wait for every process to become ready (default 120)",
    )
    up.set_defaults(handler=_up)


def _add_down(commands: Any) -> None:
    down = commands.add_parser(
        "down",
        help="stop every process of the stack",
        description="Stop every process gracefully (SIGTERM, then SIGKILL after its stop "
        "time) in reverse start order, then supervisord.",
    )
    down.add_argument(
        "--timeout-s",
        type=float,
        default=150.0,
        help="seconds to wait for supervisord to exit (default 150)",
    )
    down.set_defaults(handler=_down)


def _add_status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show processes, health, Envoy clusters and key numbers",
        description="Show every process with its site, pid, state and health, the healthy "
        "hosts of each Envoy cluster per site, the stack's URLs, and key numbers measured "
        "over --window-s: requests per second and error ratio per site, the serving site, "
        "tasks in flight and queued, and the cache hit ratio. Exits 1 when the stack "
        "is not up or any process is not running or not healthy.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--window-s",
        type=float,
        default=1.0,
        help="seconds between the two samples of the key numbers (default 1)",
    )
    status.set_defaults(handler=_status)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pika logs every connection step and httpx every request at INFO.
    for name in ("pika", "httpx", "httpcore", "grpc_reflection"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _stack(args: argparse.Namespace) -> Stack:
    environ = dict(os.environ)
    if args.state_dir is not None:
        environ["ENVIOS_STATE_DIR"] = str(args.state_dir.resolve())
    if args.topology is not None:
        environ["ENVIOS_TOPOLOGY"] = str(args.topology.resolve())
    return stack_from_environ(environ)


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if not stack.up(timeout_s=args.timeout_s):
        print(f"envios is already up (state directory {stack.state_dir}); nothing started")
        return 0
    print(f"envios is up: front {stack.front_http_url}, gRPC {stack.grpc_target}, ", end="")
    print(f"Envoy admin {stack.envoy_admin_url}, state directory {stack.state_dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if stack.down(timeout_s=args.timeout_s):
        print("envios is down")
    else:
        print(f"envios was not up (no running supervisord in {stack.state_dir})")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    report = stack.status()
    numbers = None
    if report["up"] and not stack.data_only:
        numbers = key_numbers.measure(stack.topology, stack.envoy_admin_url, args.window_s)
        report["key_numbers"] = key_numbers.as_dict(numbers)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_status(report))
        if numbers is not None:
            print("\n" + key_numbers.format_numbers(numbers))
    if not report["up"]:
        logger.error("envios is not up; start it with `envios up`")
        return 1
    unhealthy = [
        row["name"]
        for row in report["processes"]
        if row["state"] != "RUNNING" or row["health"] not in HEALTHY
    ]
    if unhealthy:
        logger.error("not running or not healthy: %s", ", ".join(unhealthy))
        return 1
    return 0


def format_status(report: dict[str, Any]) -> str:
    """Return the human-readable form of ``Stack.status()``."""
    if not report["up"]:
        return f"envios is not up (state directory {report['state_dir']})"
    lines = [f"envios is up (supervisord pid {report['supervisord_pid']})", ""]
    lines.append(f"{'PROCESS':<22} {'SITE':<10} {'PID':>7}  {'STATE':<9} HEALTH")
    for row in report["processes"]:
        pid, site = row["pid"] or "-", row["site"] or "-"
        lines.append(f"{row['name']:<22} {site:<10} {pid:>7}  {row['state']:<9} {row['health']}")
    if report["clusters"]:
        lines += ["", f"{'ENVOY CLUSTER':<22} {'SITE':<10} HEALTHY HOSTS"]
        for cluster, sites in sorted(report["clusters"].items()):
            for site, counts in sorted(sites.items()):
                lines.append(f"{cluster:<22} {site:<10} {counts['healthy']}/{counts['total']}")
    lines.append("")
    for key in ("front_http_url", "grpc_target", "envoy_admin_url", "redis_url", "amqp_url"):
        lines.append(f"{key:<16} {report[key]}")
    lines.append(f"{'state_dir':<16} {report['state_dir']}")
    return "\n".join(lines)


def _provision(args: argparse.Namespace) -> int:
    installed = ensure_packages(os.environ, test_tools=args.test_tools)
    if installed:
        print(f"installed Debian packages: {' '.join(installed)}")
    found = {
        "redis-server": find_binary("redis-server"),
        "rabbitmq-server": rabbitmq_server_binary(),
        "epmd": find_binary("epmd"),
    }
    for name, path in found.items():
        print(f"{name:<16} {path or 'not needed (URL given)'}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    if args.url is None:
        args.url = _stack(args).front_http_url
    return replay.run(args)


def _call(args: argparse.Namespace) -> int:
    return grpc_call.run(args, args.target or _stack(args).grpc_target)
