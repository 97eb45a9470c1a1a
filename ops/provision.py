"""Redis and RabbitMQ for the local stack: packages, program definitions, readiness.

When ``REDIS_URL`` / ``AMQP_URL`` are given, the stack uses those servers and starts
nothing for them. Otherwise it runs its own, bound to 127.0.0.1 on the topology's ports,
with all their files under the state directory:

- ``redis-server`` in the foreground with an append-only file (``appendfsync everysec``)
  and no RDB snapshots. Redis is a cache in front of the database, so nothing depends on
  its durability. The AOF costs little and keeps task progress across a restart of the
  Redis process; a crash loses at most about one second of writes.
- a private Erlang port mapper (``epmd``) on its own port, so the stack stops the one it
  started and never touches a system-wide epmd on port 4369;
- a RabbitMQ node with its own node name, ports, config file, empty plugin list (no
  management plugin) and Erlang cookie (``HOME`` points into the state directory).

The Debian ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq``
user with ``su`` and writes to ``/var/log/rabbitmq``; the stack runs the script behind it,
``/usr/lib/rabbitmq/bin/rabbitmq-server``, as the current user instead.

``python -m ops.provision exec-after-listen [--timeout-s S] HOST:PORT -- COMMAND...``
starts COMMAND once a TCP port accepts connections; the RabbitMQ program uses it to wait
for its epmd.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ops import health
from ops.topology import HOST, Topology

logger = logging.getLogger(__name__)

RABBITMQ_SCRIPT_PATHS = (
    Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),
    Path("/usr/sbin/rabbitmq-server"),
)
"""Candidate paths of ``rabbitmq-server``, searched in order before PATH (Debian's first)."""

SYSTEM_BINARY_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Searched after PATH, because a non-root PATH often lacks the sbin directories."""

DEFAULT_SYSTEM_PORTS = {"redis-server": 6379, "rabbitmq-server": 5672}
"""Ports a system-wide daemon started by a package's postinst script would listen on."""

EPMD_WAIT_S = 20.0
"""Time the RabbitMQ program waits for its epmd before it gives up."""


class ProvisionError(RuntimeError):
    """Raised when Redis or RabbitMQ cannot be installed, found or reached."""


@dataclass(frozen=True)
class Program:
    """One process the supervisor runs: the command, its environment and lifecycle settings."""

    name: str
    """Program name, unique in the stack, for example ``redis`` or ``shipment-primary-1``."""
    command: tuple[str, ...]
    group: str
    """Supervisor group; a group starts and stops as a unit, in ``priority`` order."""
    priority: int
    """Lower starts earlier and stops later."""
    stop_wait_s: int
    """Seconds between SIGTERM and SIGKILL."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Variables added to the supervisor's own environment."""
    site: str = ""
    """Site of a service replica or task worker; empty for shared processes."""


@dataclass(frozen=True)
class DataTier:
    """Addresses of Redis and RabbitMQ, and which of them the stack runs itself."""

    redis_url: str
    amqp_url: str
    run_redis: bool
    """True when the stack starts ``redis-server`` (``REDIS_URL`` was not given)."""
    run_rabbitmq: bool
    """True when the stack starts a RabbitMQ node (``AMQP_URL`` was not given)."""

    @property
    def node_name(self) -> str:
        """Erlang node name of the project-run RabbitMQ node."""
        return f"envios-{urlsplit(self.amqp_url).port}@localhost"


def plan_data_tier(topology: Topology, environ: Mapping[str, str]) -> DataTier:
    """Decide from ``environ`` which data servers to use and which to run."""
    redis_url = environ.get("REDIS_URL", "")
    amqp_url = environ.get("AMQP_URL", "")
    return DataTier(
        redis_url=redis_url or f"redis://{HOST}:{topology.redis_port}/0",
        amqp_url=amqp_url or f"amqp://guest:guest@{HOST}:{topology.amqp_port}/%2F",
        run_redis=not redis_url,
        run_rabbitmq=not amqp_url,
    )


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def find_binary(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the path of executable ``name`` on PATH or in the system binary directories."""
    search = [(environ or os.environ).get("PATH", ""), *SYSTEM_BINARY_DIRS]
    return shutil.which(name, path=os.pathsep.join(search))


def rabbitmq_server_binary() -> str | None:
    """Return the ``rabbitmq-server`` script to run as the current user, or None if absent."""
    for path in RABBITMQ_SCRIPT_PATHS:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return find_binary("rabbitmq-server")


TEST_TOOLS = {
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}
"""Binaries the test suite runs besides the stack, and the Debian package of each."""


def missing_packages(environ: Mapping[str, str], *, test_tools: bool = False) -> list[str]:
    """Return the Debian packages whose binaries the stack needs but cannot find.

    With ``test_tools``, the packages of ``TEST_TOOLS`` count too.
    """
    missing = []
    if test_tools:
        missing += [pkg for binary, pkg in TEST_TOOLS.items() if not find_binary(binary, environ)]
    if not environ.get("REDIS_URL") and find_binary("redis-server", environ) is None:
        missing.append("redis-server")
    rabbitmq_found = rabbitmq_server_binary() is not None and find_binary("epmd", environ)
    if not environ.get("AMQP_URL") and not rabbitmq_found:
        missing.append("rabbitmq-server")
    return sorted(set(missing))


def ensure_packages(environ: Mapping[str, str], *, test_tools: bool = False) -> list[str]:
    """Install the missing ``redis-server`` / ``rabbitmq-server`` Debian packages.

    With ``test_tools``, also the packages of ``TEST_TOOLS`` (browser, Prometheus).

    Only packages for servers the stack runs itself count: ``REDIS_URL`` or ``AMQP_URL``
    in ``environ`` makes the matching package unnecessary. As root, runs ``apt-get update``
    and ``apt-get install -y``; a system-wide daemon that a package's postinst script starts
    is left running and reported.

    Returns:
        The packages installed; empty when nothing was missing.

    Raises:
        ProvisionError: when a package is missing and the process is not root (the message
            contains the ``sudo apt-get install`` command), or when installing fails.
    """
    missing = missing_packages(environ, test_tools=test_tools)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise ProvisionError(
            f"missing Debian packages: {' '.join(missing)}; install them with: "
            f"sudo apt-get install -y {' '.join(missing)}"
        )
    if find_binary("apt-get") is None:
        raise ProvisionError(
            f"missing packages {' '.join(missing)} and no apt-get to install them; install "
            "Redis and RabbitMQ with the system's package manager, or set REDIS_URL and AMQP_URL"
        )
    _apt_get(["update"])
    _apt_get(["install", "-y", "--no-install-recommends", *missing])
    still_missing = missing_packages(environ, test_tools=test_tools)
    if still_missing:
        raise ProvisionError(f"apt-get installed {missing} but {still_missing} are still missing")
    _report_system_daemons(missing)
    return missing


def _apt_get(arguments: list[str]) -> None:
    command = ["apt-get", *arguments]
    logger.info("running %s", " ".join(command))
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, env=environment, check=False)
    if result.returncode != 0:
        raise ProvisionError(f"{' '.join(command)} failed with exit status {result.returncode}")


def _report_system_daemons(packages: list[str]) -> None:
    for package in packages:
        port = DEFAULT_SYSTEM_PORTS[package]
        if health.tcp_listening(HOST, port) is None:
            logger.warning(
                "a system-wide %s listens on %s:%d (started by the package); envios leaves it "
                "running and starts its own on the topology's port",
                package,
                HOST,
                port,
            )


def prepare_state(state_dir: Path, topology: Topology, data_tier: DataTier) -> None:
    """Create the data servers' directories and RabbitMQ's config files under ``state_dir``."""
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    if data_tier.run_redis:
        (state_dir / "redis").mkdir(exist_ok=True)
    if not data_tier.run_rabbitmq:
        return
    base = state_dir / "rabbitmq"
    for directory in (base / "home", base / "mnesia", state_dir / "logs" / "rabbitmq"):
        directory.mkdir(parents=True, exist_ok=True)
    (base / "rabbitmq.conf").write_text(rabbitmq_conf(topology), encoding="utf-8")
    (base / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    (base / "rabbitmq-env.conf").write_text(
        "# Empty on purpose: the node's settings come from its environment.\n", encoding="utf-8"
    )


def rabbitmq_conf(topology: Topology) -> str:
    """Return the ``rabbitmq.conf`` of the project-run node."""
    return (
        "# Generated by envios for its private RabbitMQ node.\n"
        f"listeners.tcp.default = {HOST}:{topology.amqp_port}\n"
        "# The guest user may connect from loopback only (the broker default, kept on purpose).\n"
        "loopback_users.guest = true\n"
    )


def data_tier_programs(
    topology: Topology, state_dir: Path, data_tier: DataTier, epmd_port: int
) -> list[Program]:
    """Return the supervisor programs of the data servers the stack runs itself.

    ``epmd_port`` is the port of the private epmd that the RabbitMQ node registers with.
    """
    programs = []
    if data_tier.run_redis:
        programs.append(_redis_program(topology, state_dir))
    if data_tier.run_rabbitmq:
        programs.append(_epmd_program(epmd_port))
        programs.append(_rabbitmq_program(topology, state_dir, data_tier, epmd_port))
    return programs


def _redis_program(topology: Topology, state_dir: Path) -> Program:
    command = (
        find_binary("redis-server") or "redis-server",
        *("--bind", HOST, "--port", str(topology.redis_port), "--protected-mode", "yes"),
        *("--dir", str(state_dir / "redis"), "--daemonize", "no", "--logfile", ""),
        *("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
    )
    return Program("redis", command, group="data", priority=100, stop_wait_s=10)


def _epmd_program(epmd_port: int) -> Program:
    command = (find_binary("epmd") or "epmd", "-port", str(epmd_port), "-address", HOST)
    return Program("epmd", command, group="epmd", priority=50, stop_wait_s=5)


def _rabbitmq_program(
    topology: Topology, state_dir: Path, data_tier: DataTier, epmd_port: int
) -> Program:
    script = rabbitmq_server_binary() or "rabbitmq-server"
    epmd_address = f"{HOST}:{epmd_port}"
    command = (
        *(sys.executable, "-m", "ops.provision", "exec-after-listen"),
        *("--timeout-s", f"{EPMD_WAIT_S:g}", epmd_address, "--", script),
    )
    return Program(
        "rabbitmq",
        command,
        group="data",
        priority=100,
        stop_wait_s=30,
        environment=rabbitmq_environment(topology, state_dir, data_tier, epmd_port),
    )


def rabbitmq_environment(
    topology: Topology, state_dir: Path, data_tier: DataTier, epmd_port: int
) -> dict[str, str]:
    """Return the variables that give the project-run node its names, ports and files.

    ``rabbitmqctl`` needs the same ``HOME`` (for the Erlang cookie) and ``ERL_EPMD_PORT``.
    """
    base = state_dir / "rabbitmq"
    return {
        "HOME": str(base / "home"),
        "ERL_EPMD_ADDRESS": HOST,
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": data_tier.node_name,
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(topology.amqp_port),
        "RABBITMQ_DIST_PORT": str(topology.amqp_dist_port),
        # Without this, the Erlang distribution listener binds to all interfaces.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_BASE": str(base),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(state_dir / "logs" / "rabbitmq"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
    }


def wait_redis(url: str, timeout_s: float) -> None:
    """Wait until the Redis server at ``url`` replies to PING.

    Raises:
        ProvisionError: when no PING succeeds within ``timeout_s`` seconds.
    """
    failed = health.wait_until({"redis": lambda: health.redis_ping(url)}, timeout_s)
    if failed:
        raise ProvisionError(
            f"Redis at {redact_url(url)} did not reply to PING within {timeout_s:g} s: "
            f"{failed['redis']}"
        )


def wait_amqp(url: str, timeout_s: float) -> None:
    """Wait until the AMQP broker at ``url`` accepts a connection.

    A plain TCP connect comes first in each attempt, so a broker that is still booting
    costs no AMQP handshake (and no pika error log line).

    Raises:
        ProvisionError: when no connection succeeds within ``timeout_s`` seconds.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 5672

    def probe() -> str | None:
        return health.tcp_listening(host, port) or health.amqp_connect(url)

    failed = health.wait_until({"amqp": probe}, timeout_s)
    if failed:
        raise ProvisionError(
            f"AMQP broker at {redact_url(url)} did not accept a connection within "
            f"{timeout_s:g} s: {failed['amqp']}"
        )


def exec_after_listen(address: str, timeout_s: float, command: Sequence[str]) -> int:
    """Replace this process with ``command`` once ``address`` (host:port) accepts TCP.

    Returns 1 (and runs nothing) when the port does not open within ``timeout_s``.
    """
    host, _, port = address.rpartition(":")
    failed = health.wait_until({address: lambda: health.tcp_listening(host, int(port))}, timeout_s)
    if failed:
        print(f"{address} did not accept connections within {timeout_s:g} s", file=sys.stderr)
        return 1
    os.execvp(command[0], list(command))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``exec-after-listen``, the command-line form of ``exec_after_listen``."""
    parser = argparse.ArgumentParser(prog="python -m ops.provision")
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("exec-after-listen", help="run a command once a port listens")
    wait.add_argument("--timeout-s", type=float, default=EPMD_WAIT_S, help="seconds to wait")
    wait.add_argument("address", help="HOST:PORT that must accept TCP connections first")
    wait.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] to run")
    args = parser.parse_args(argv)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        parser.error("a command to run is required after --")
    return exec_after_listen(args.address, args.timeout_s, command)


if __name__ == "__main__":
    sys.exit(main())
