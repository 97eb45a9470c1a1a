"""The local stack under one supervisord: render, start, wait, inspect, stop.

One supervisord per state directory runs every process of the stack, so ``down`` stops
all of them. Supervisor groups start in priority order and stop in the reverse order,
one group at a time (the processes inside a group stop in parallel):

====  ==========  ============================================================
prio  group       programs
====  ==========  ============================================================
50    epmd        private Erlang port mapper (only with a project-run RabbitMQ)
100   data        redis, rabbitmq (only the ones the stack runs itself)
300   services    every replica of every service, in every site
400   workers     task workers and the status projector of every site
500   proxy       envoy
600   gateways    one HTTP/JSON gateway per gateway port
====  ==========  ============================================================

No program restarts by itself (``autorestart=false``): a replica that a failover test
kills must stay down until the test starts it again.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
from supervisor.xmlrpc import SupervisorTransport

from ops import envoy_config, health
from ops.envoy_tracing import EnvoyTracing
from ops.provision import (
    DataTier,
    Program,
    data_tier_programs,
    ensure_packages,
    plan_data_tier,
    prepare_state,
    redact_url,
    wait_amqp,
    wait_redis,
)
from ops.topology import (
    DEFAULT_TOPOLOGY_PATH,
    GRPC_SERVICE_NAMES,
    HOST,
    Site,
    Topology,
    free_ports,
    load_topology,
)
from services.common.config import PREFIX, EnvReader

logger = logging.getLogger(__name__)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPOSITORY_ROOT / ".envios"

EXTERNAL_CHECK_TIMEOUT_S = 10.0
"""Time a Redis or RabbitMQ given by URL has to respond before ``up`` starts anything."""

STOP_MARGIN_S = 5.0
"""Seconds added to a service's drain and grace period before supervisord sends SIGKILL."""

DEAD_STATES = frozenset({"STOPPED", "EXITED", "FATAL"})
"""Supervisor process states of a process that is not running and will not start by itself."""


class StackError(RuntimeError):
    """Raised when the stack cannot be started, reached or stopped; the message names the fix."""


def stack_from_environ(environ: Mapping[str, str], *, data_only: bool = False) -> Stack:
    """Build the stack that ``ENVIOS_STATE_DIR`` and ``ENVIOS_TOPOLOGY`` describe.

    The state directory defaults to ``.envios/`` at the repository root and the topology
    to ``envoy/topology.toml``.
    """
    state_dir = Path(environ.get("ENVIOS_STATE_DIR") or DEFAULT_STATE_DIR)
    topology_path = Path(environ.get("ENVIOS_TOPOLOGY") or DEFAULT_TOPOLOGY_PATH)
    return Stack(load_topology(topology_path), state_dir, environ, data_only=data_only)


class Stack:
    """The processes of one topology, supervised from one state directory.

    ``environ`` is the environment supervisord and every program inherit; ``REDIS_URL`` /
    ``AMQP_URL`` in it make the stack use those servers instead of running its own. With
    ``data_only=True`` the stack runs only Redis and RabbitMQ (integration tests use it).
    """

    def __init__(
        self,
        topology: Topology,
        state_dir: Path,
        environ: Mapping[str, str],
        *,
        data_only: bool = False,
    ) -> None:
        self.topology = topology
        self.state_dir = Path(state_dir).resolve()
        self.environ = dict(environ)
        self.data_only = data_only
        self.data_tier: DataTier = plan_data_tier(topology, self.environ)

    # Paths and addresses.

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "supervisord.pid"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "supervisor.sock"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def envoy_config_path(self) -> Path:
        return self.state_dir / "envoy.yaml"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.state_dir / 'envios.db'}"

    @property
    def redis_url(self) -> str:
        return self.data_tier.redis_url

    @property
    def amqp_url(self) -> str:
        return self.data_tier.amqp_url

    @property
    def front_http_url(self) -> str:
        """Envoy's front listener, where external HTTP/JSON callers connect."""
        return f"http://{HOST}:{self.topology.front_port}"

    @property
    def grpc_target(self) -> str:
        """Envoy's gRPC listener as a ``grpc.insecure_channel`` target (``host:port``)."""
        return f"{HOST}:{self.topology.grpc_port}"

    @property
    def grpc_url(self) -> str:
        """Envoy's gRPC listener as a URL; pass ``grpc_target`` to gRPC channels."""
        return f"grpc://{self.grpc_target}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://{HOST}:{self.topology.admin_port}"

    @cached_property
    def epmd_port(self) -> int:
        """Port of the private epmd, picked free when first needed (the topology has none)."""
        return free_ports(1)[0]

    def log_path(self, name: str) -> Path:
        """Return the log file of program ``name`` (stdout and stderr together)."""
        return self.logs_dir / f"{name}.log"

    # Programs and configuration.

    def programs(self) -> list[Program]:
        """Return every program of the stack, in start order."""
        epmd_port = self.epmd_port if self.data_tier.run_rabbitmq else 0
        programs = data_tier_programs(self.topology, self.state_dir, self.data_tier, epmd_port)
        if self.data_only:
            return programs
        programs += self._service_programs()
        programs += self._worker_programs()
        programs += self._projector_programs()
        programs.append(self._envoy_program())
        programs += self._gateway_programs()
        return programs

    def _service_programs(self) -> list[Program]:
        stop_wait_s = self._app_stop_wait_s()
        programs = []
        for replica in self.topology.replicas():
            environment = self._app_environment(replica.site, replica.name)
            environment[PREFIX + "LISTEN_ADDRESS"] = replica.address
            environment[PREFIX + "MAX_CONCURRENT_RPCS"] = str(self.topology.max_concurrent_rpcs)
            command = (sys.executable, "-m", f"services.{replica.service}")
            programs.append(
                Program(
                    replica.name, command, "services", 300, stop_wait_s, environment, replica.site
                )
            )
        return programs

    def _worker_programs(self) -> list[Program]:
        stop_wait_s = self._app_stop_wait_s()
        command = (sys.executable, "-m", "services.task.worker")
        programs = []
        for site in self.topology.sites:
            for index in range(1, site.workers + 1):
                name = f"worker-{site.name}-{index}"
                environment = self._app_environment(site.name, name)
                priority, shifted = worker_priorities(self.topology, site)
                environment[PREFIX + "WORKER_PRIORITY"] = str(priority)
                environment[PREFIX + "WORKER_SHIFTED_PRIORITY"] = str(shifted)
                environment[PREFIX + "TRAFFIC_ADMIN_URL"] = self.envoy_admin_url
                programs.append(
                    Program(name, command, "workers", 400, stop_wait_s, environment, site.name)
                )
        return programs

    def _projector_programs(self) -> list[Program]:
        """Return one status projector per site; the event queue lets one consume at a time."""
        command = (sys.executable, "-m", "services.projector")
        programs = []
        for site in self.topology.sites:
            name = f"projector-{site.name}"
            environment = self._app_environment(site.name, name)
            programs.append(Program(name, command, "workers", 400, 10, environment, site.name))
        return programs

    def _envoy_program(self) -> Program:
        command = tuple(envoy_config.envoy_command(self.envoy_config_path))
        return Program("envoy", command, "proxy", 500, stop_wait_s=10)

    def _gateway_programs(self) -> list[Program]:
        stop_wait_s = self._app_stop_wait_s()
        limit = str(self.topology.gateway_max_concurrent_requests)
        programs = []
        for index, port in enumerate(self.topology.gateway_ports, start=1):
            name = f"gateway-{index}"
            # Gateways serve both sites, so they belong to none (site "" in status); the
            # process contract still requires ENVIOS_SITE, so they get the primary's name.
            environment = self._app_environment(self.topology.primary.name, name)
            environment[PREFIX + "LISTEN_ADDRESS"] = f"{HOST}:{port}"
            environment[PREFIX + "MAX_CONCURRENT_REQUESTS"] = limit
            command = (sys.executable, "-m", "gateway")
            programs.append(Program(name, command, "gateways", 600, stop_wait_s, environment))
        return programs

    def _app_environment(self, site: str, replica: str) -> dict[str, str]:
        # The OpenTelemetry variables (exporter, endpoint, sampler, batch delays) go to every
        # application process as they are; each sets its own service name and replica.
        tracing = {name: value for name, value in self.environ.items() if name.startswith("OTEL_")}
        return {
            **tracing,
            PREFIX + "SITE": site,
            PREFIX + "REPLICA": replica,
            PREFIX + "METRICS_ADDRESS": self.topology.metrics_endpoint(replica).address,
            PREFIX + "DATABASE_URL": self.database_url,
            PREFIX + "UPSTREAM_GRPC": self.grpc_target,
            PREFIX + "LOG_LEVEL": self.environ.get(PREFIX + "LOG_LEVEL", "INFO"),
            "REDIS_URL": self.redis_url,
            "AMQP_URL": self.amqp_url,
            "PYTHONUNBUFFERED": "1",
        }

    def _app_stop_wait_s(self) -> int:
        """Return the SIGTERM-to-SIGKILL time: the services' drain and grace plus a margin."""
        reader = EnvReader(self.environ)
        drain_s = reader.seconds(PREFIX + "DRAIN_S", 1.0)
        grace_s = reader.seconds(PREFIX + "SHUTDOWN_GRACE_S", 10.0)
        reader.check()
        return math.ceil(drain_s + grace_s + STOP_MARGIN_S)

    def render_supervisord_conf(self) -> str:
        """Return the text of ``supervisord.conf`` for this stack."""
        programs = self.programs()
        sections = [self._supervisord_sections()]
        sections += [self._program_section(program) for program in programs]
        sections += _group_sections(programs)
        return "\n".join(sections)

    def _supervisord_sections(self) -> str:
        socket_path = _escape(str(self.socket_path))
        return (
            "; Generated by envios for one stack; `envios up` rewrites it on every start.\n"
            "[unix_http_server]\n"
            f"file={socket_path}\n"
            "chmod=0700\n\n"
            "[supervisord]\n"
            "identifier=envios\n"
            f"logfile={_escape(str(self.logs_dir / 'supervisord.log'))}\n"
            f"pidfile={_escape(str(self.pidfile))}\n"
            f"childlogdir={_escape(str(self.logs_dir))}\n"
            f"directory={_escape(str(self.state_dir))}\n"
            "nodaemon=false\n"
            "umask=022\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            "[supervisorctl]\n"
            f"serverurl=unix://{socket_path}\n"
        )

    def _program_section(self, program: Program) -> str:
        lines = [
            f"[program:{program.name}]",
            f"command={_escape(shlex.join(program.command))}",
            f"directory={_escape(str(self.state_dir))}",
            f"priority={program.priority}",
            "autostart=true",
            "autorestart=false",
            "startsecs=1",
            "startretries=1",
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_wait_s}",
            # SIGTERM goes to the program only (a wrapper script forwards it), but SIGKILL
            # after stopwaitsecs goes to its whole process group.
            "stopasgroup=false",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_escape(str(self.log_path(program.name)))}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=2",
        ]
        if program.environment:
            lines.append(f"environment={_environment_value(program.environment)}")
        return "\n".join(lines) + "\n"

    # Lifecycle.

    def up(self, timeout_s: float = 120.0) -> bool:
        """Start the stack and wait until every process is ready.

        Renders and validates ``envoy.yaml``, renders ``supervisord.conf``, starts
        supervisord and waits for Redis, RabbitMQ, every service replica (SERVING for its
        service name), every gateway (``/healthz`` 200) and Envoy (``/ready`` 200 and every
        host healthy). Missing Debian packages are installed first (see ``ensure_packages``).

        Returns:
            True when it started the stack, False when a supervisord of this state
            directory was already running (then nothing is changed).

        Raises:
            StackError: when a step fails or a process is not ready within ``timeout_s``
                seconds. The log then names each process that is not ready, with the tail
                of its log. The stack is left running for inspection; ``down`` stops it.
            ProvisionError: when Redis or RabbitMQ cannot be installed or reached.
        """
        pid = self.supervisord_pid()
        if pid is not None:
            logger.info("already up: supervisord pid %d, state directory %s", pid, self.state_dir)
            return False
        started = time.monotonic()
        self._prepare()
        self._start_supervisord()
        self.wait_ready(timeout_s=timeout_s)
        logger.info(
            "stack is up in %.1f s (state directory %s)", time.monotonic() - started, self.state_dir
        )
        return True

    def _prepare(self) -> None:
        ensure_packages(self.environ)
        if not self.data_tier.run_redis:
            wait_redis(self.redis_url, EXTERNAL_CHECK_TIMEOUT_S)
        if not self.data_tier.run_rabbitmq:
            wait_amqp(self.amqp_url, EXTERNAL_CHECK_TIMEOUT_S)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        prepare_state(self.state_dir, self.topology, self.data_tier)
        if not self.data_only:
            runtime_root = self.state_dir / "runtime"
            tracing = EnvoyTracing.from_env(self.environ)
            envoy_config.write(
                self.topology, self.envoy_config_path, runtime_root=runtime_root, tracing=tracing
            )
            envoy_config.validate(self.envoy_config_path)
        self.conf_path.write_text(self.render_supervisord_conf(), encoding="utf-8")
        self.conf_path.chmod(0o600)

    def _start_supervisord(self) -> None:
        command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf_path)]
        logger.info("starting supervisord: %s", shlex.join(command))
        result = subprocess.run(
            command, env=self.environ, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise StackError(
                f"supervisord failed to start (exit status {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()}; "
                f"see {self.logs_dir / 'supervisord.log'}"
            )
        deadline = time.monotonic() + 10.0
        while self.supervisord_pid() is None:
            if time.monotonic() >= deadline:
                raise StackError(f"supervisord wrote no live pid to {self.pidfile} within 10 s")
            time.sleep(health.POLL_INTERVAL_S)

    def wait_ready(self, names: Iterable[str] | None = None, timeout_s: float = 60.0) -> None:
        """Wait until the named processes (all when None) pass their readiness probes.

        Stops waiting at once when a supervised process has died.

        Raises:
            StackError: naming every process still not ready, after logging each one's
                reason and the tail of its log.
        """
        probes = self.probes()
        if names is not None:
            probes = {name: probes[name] for name in names if name in probes}
        failed = health.wait_until(probes, timeout_s, abort=self._abort_reason)
        if not failed:
            return
        problem = failed.pop("abort", f"not ready within {timeout_s:g} s")
        try:
            dead = self._dead_processes()
        except (OSError, xmlrpc.client.Error):
            dead = []
        for name in dead:
            failed.setdefault(name, "the process is not running")
        for name, reason in failed.items():
            log = self.log_path(name)
            logger.error("%s: %s\n--- tail of %s ---\n%s", name, reason, log, health.tail(log))
        raise StackError(
            f"{problem}: {', '.join(sorted(failed))}; the logs are in {self.logs_dir}; "
            "run `envios down` to stop what is running"
        )

    def probes(self) -> dict[str, health.Probe]:
        """Return the readiness probe of every process that has one, keyed by program name.

        Task workers and epmd have no probe: supervisord tracks them by pid only.
        """
        probes: dict[str, health.Probe] = {
            "redis": lambda: health.redis_ping(self.redis_url),
            "rabbitmq": self._amqp_probe,
        }
        if self.data_only:
            return probes
        for replica in self.topology.replicas():
            service_name = GRPC_SERVICE_NAMES[replica.service]
            probes[replica.name] = _bind(health.grpc_serving, replica.address, service_name)
        for index, port in enumerate(self.topology.gateway_ports, start=1):
            probes[f"gateway-{index}"] = _bind(health.http_ok, f"http://{HOST}:{port}/healthz")
        probes["envoy"] = self._envoy_probe
        return probes

    def _amqp_probe(self) -> str | None:
        port = self.topology.amqp_port
        if self.data_tier.run_rabbitmq:
            not_listening = health.tcp_listening(HOST, port)
            if not_listening is not None:
                return not_listening
        return health.amqp_connect(self.amqp_url)

    def _envoy_probe(self) -> str | None:
        not_ready = health.http_ok(f"{self.envoy_admin_url}/ready")
        if not_ready is not None:
            return not_ready
        return health.envoy_hosts_healthy(self.envoy_admin_url, self._upstream_addresses())

    def _upstream_addresses(self) -> list[str]:
        addresses = [replica.address for replica in self.topology.replicas()]
        return addresses + [f"{HOST}:{port}" for port in self.topology.gateway_ports]

    def _abort_reason(self) -> str | None:
        try:
            dead = self._dead_processes()
        except (OSError, xmlrpc.client.Error) as error:
            return f"supervisord does not respond ({error!r}), so these cannot start"
        return "processes died, so these cannot become ready" if dead else None

    def _dead_processes(self) -> list[str]:
        """Return the programs that are not running and will not start by themselves."""
        infos = self._process_infos()
        return [info["name"] for info in infos if info["statename"] in DEAD_STATES]

    def down(self, timeout_s: float = 150.0) -> bool:
        """Stop every process and supervisord; each process gets SIGTERM and its stop time.

        Returns:
            True when it stopped a running stack, False when none was running.

        Raises:
            StackError: when supervisord still runs after ``timeout_s`` seconds.
        """
        pid = self.supervisord_pid()
        if pid is None:
            logger.info("not up: no running supervisord in %s", self.state_dir)
            return False
        started = time.monotonic()
        try:
            with self._rpc() as rpc:
                rpc.supervisor.shutdown()
        except (OSError, xmlrpc.client.Error) as error:
            logger.warning(
                "supervisor shutdown request failed (%r); sending SIGTERM to pid %d", error, pid
            )
            os.kill(pid, signal.SIGTERM)
        deadline = started + timeout_s
        while _is_supervisord(pid, self.conf_path):
            if time.monotonic() >= deadline:
                raise StackError(
                    f"supervisord pid {pid} still runs {timeout_s:g} s after shutdown; "
                    f"see {self.logs_dir / 'supervisord.log'}, then `kill {pid}`"
                )
            time.sleep(health.POLL_INTERVAL_S)
        logger.info("stack is down in %.1f s", time.monotonic() - started)
        return True

    # Inspection and control of single processes.

    def supervisord_pid(self) -> int | None:
        """Return the pid of this state directory's running supervisord, or None."""
        try:
            pid = int(self.pidfile.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_supervisord(pid, self.conf_path) else None

    def status(self) -> dict[str, Any]:
        """Return the stack's addresses, every process and every Envoy cluster's health.

        ``processes`` lists ``name``, ``group``, ``site``, ``pid``, ``state`` (supervisor
        state name) and ``health`` ("ok", the probe's reason, or "-" without a probe);
        ``clusters`` maps each Envoy cluster to ``{site: {"healthy": n, "total": m}}``, with
        site ``"-"`` for hosts of no site (the gateways).
        URL passwords are replaced by ``***``. ``up`` is False when no supervisord runs.
        """
        pid = self.supervisord_pid()
        result: dict[str, Any] = {
            "up": pid is not None,
            "supervisord_pid": pid,
            "state_dir": str(self.state_dir),
            "front_http_url": self.front_http_url,
            "grpc_url": self.grpc_url,
            "grpc_target": self.grpc_target,
            "envoy_admin_url": self.envoy_admin_url,
            "redis_url": redact_url(self.redis_url),
            "amqp_url": redact_url(self.amqp_url),
            "database_url": self.database_url,
            "processes": [],
            "clusters": {},
        }
        if pid is not None:
            result["processes"] = self._process_status()
            if not self.data_only:
                result["clusters"] = self._cluster_status()
        return result

    def _process_status(self) -> list[dict[str, Any]]:
        programs = self.programs()
        sites = {program.name: program.site for program in programs}
        order = {program.name: index for index, program in enumerate(programs)}
        infos = sorted(self._process_infos(), key=lambda info: order.get(info["name"], len(order)))
        probes = self.probes()
        rows = []
        for info in infos:
            name = info["name"]
            running = info["statename"] == "RUNNING"
            probe = probes.get(name)
            reason = probe() if running and probe is not None else None
            rows.append(
                {
                    "name": name,
                    "group": info["group"],
                    "site": sites.get(name, ""),
                    "pid": info["pid"] or None,
                    "state": info["statename"],
                    "health": "-" if probe is None or not running else reason or "ok",
                }
            )
        return rows

    def _cluster_status(self) -> dict[str, dict[str, dict[str, int]]]:
        try:
            hosts = health.envoy_hosts(self.envoy_admin_url)
        except (OSError, ValueError, httpx.HTTPError) as error:
            logger.warning("Envoy admin API at %s failed: %r", self.envoy_admin_url, error)
            return {}
        site_of = {replica.address: replica.site for replica in self.topology.replicas()}
        clusters: dict[str, dict[str, dict[str, int]]] = {}
        for host in hosts:
            site = site_of.get(host.address, "-")
            counts = clusters.setdefault(host.cluster, {}).setdefault(
                site, {"healthy": 0, "total": 0}
            )
            counts["total"] += 1
            counts["healthy"] += int(host.healthy)
        return clusters

    def pid_of(self, name: str) -> int | None:
        """Return the pid of program ``name``, or None when it is not running."""
        with self._rpc() as rpc:
            info = rpc.supervisor.getProcessInfo(self._namespec(name))
        return int(info["pid"]) or None

    def stop_process(self, name: str) -> None:
        """Stop program ``name`` gracefully (SIGTERM, then SIGKILL after its stop time)."""
        with self._rpc() as rpc:
            rpc.supervisor.stopProcess(self._namespec(name), True)

    def start_process(self, name: str) -> None:
        """Start program ``name``; returns once supervisord reports it RUNNING (not ready:
        use ``wait_ready([name])`` for that)."""
        with self._rpc() as rpc:
            rpc.supervisor.startProcess(self._namespec(name), True)

    def kill_process(self, name: str, sig: int = signal.SIGKILL, *, wait: bool = True) -> int:
        """Send ``sig`` to the process group of program ``name`` and return the pid.

        The group includes children such as RabbitMQ's Erlang VM behind its start script.
        With ``wait``, returns once supervisord has seen the process exit (within the
        program's stop time). The program stays down, because no program restarts by itself.

        Raises:
            StackError: when the program is not running, or still runs after its stop time.
        """
        pid = self.pid_of(name)
        if pid is None:
            raise StackError(f"{name} is not running, so there is nothing to kill")
        os.killpg(pid, sig)
        if wait:
            self._wait_exited(name)
        return pid

    def _wait_exited(self, name: str) -> None:
        stop_wait_s = next(p.stop_wait_s for p in self.programs() if p.name == name)
        deadline = time.monotonic() + stop_wait_s + STOP_MARGIN_S
        while self.pid_of(name) is not None:
            if time.monotonic() >= deadline:
                raise StackError(f"{name} still runs {stop_wait_s} s after the signal")
            time.sleep(health.POLL_INTERVAL_S)

    def _namespec(self, name: str) -> str:
        groups = {program.name: program.group for program in self.programs()}
        if name not in groups:
            raise StackError(f"no program named {name!r}; programs: {', '.join(groups)}")
        return f"{groups[name]}:{name}"

    def _process_infos(self) -> list[dict[str, Any]]:
        with self._rpc() as rpc:
            infos: list[dict[str, Any]] = rpc.supervisor.getAllProcessInfo()
        return infos

    @contextmanager
    def _rpc(self) -> Iterator[Any]:
        """Yield an XML-RPC proxy to this stack's supervisord over its Unix socket."""
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        try:
            yield xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        finally:
            transport.close()


PREFERRED_WORKER_PRIORITY = 10
"""Consumer priority of the task workers of the site that takes tasks first."""


def worker_priorities(topology: Topology, site: Site) -> tuple[int, int]:
    """Return the task queue consumer priorities of ``site``'s workers: normal and shifted.

    Normally the primary's workers take every task while they have room, and the others
    stand by: they get tasks only while every primary worker is full or gone. The shifted
    priorities apply while ``envios traffic shift`` sends every call to the secondary
    first, and swap the roles of the two sites. During a partial shift the workers of both
    sites take tasks in turn (see ``WorkerConfig.priority_for``).
    """
    normal = PREFERRED_WORKER_PRIORITY if site.name == topology.primary.name else 0
    shifted = PREFERRED_WORKER_PRIORITY if site.name == topology.secondary.name else 0
    return normal, shifted


def _group_sections(programs: list[Program]) -> list[str]:
    groups: dict[str, list[Program]] = {}
    for program in programs:
        groups.setdefault(program.group, []).append(program)
    return [
        f"[group:{name}]\n"
        f"programs={','.join(program.name for program in members)}\n"
        f"priority={min(program.priority for program in members)}\n"
        for name, members in groups.items()
    ]


def _escape(value: str) -> str:
    """Return ``value`` ready for a supervisord.conf option value.

    Doubles ``%``, which the config parser treats as interpolation.

    Raises:
        ValueError: when the value contains a line break, or whitespace followed by ``;``
            or ``#`` (the parser cuts an inline comment there).
    """
    if "\n" in value or "\r" in value or re.search(r"\s[;#]", value):
        raise ValueError(f"cannot write {value!r} to supervisord.conf: line break or comment")
    return value.replace("%", "%%")


def _environment_value(environment: Mapping[str, str]) -> str:
    """Return ``KEY="value",...`` as supervisord's ``environment=`` option parses it.

    Supervisor splits the option with a non-POSIX ``shlex``: quotes cannot be escaped and
    are stripped from both ends of a value. A value is wrapped in double quotes, or in
    single quotes when it contains a double quote.

    Raises:
        ValueError: for a value that contains both quote characters or starts or ends with
            one, since no quoting preserves it.
    """
    items = []
    for key, value in sorted(environment.items()):
        quote = "'" if '"' in value else '"'
        if quote in value or value.startswith(("'", '"')) or value.endswith(("'", '"')):
            raise ValueError(f"cannot quote environment variable {key}={value!r} for supervisord")
        items.append(f"{key}={quote}{_escape(value)}{quote}")
    return ",".join(items)


def _bind(probe: Any, *args: str) -> health.Probe:
    """Return a probe that calls ``probe(*args)``; avoids late binding in loops."""
    return lambda: probe(*args)


def _is_supervisord(pid: int, conf_path: Path) -> bool:
    """Tell whether ``pid`` is a live supervisord started with ``conf_path``.

    Reads ``/proc``, so a reused pid or a zombie does not count as running.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    arguments = [part.decode(errors="replace") for part in cmdline]
    return any("supervisord" in part for part in arguments) and str(conf_path) in arguments
