"""Manual traffic shifting between sites through one Envoy runtime key.

``envoy_policy.TRAFFIC_RUNTIME_KEY`` is the percentage (0-100) of gRPC calls that go to
the secondary site first. Envoy's admin API (127.0.0.1 only) changes it live in the
admin runtime layer, which is lost when Envoy restarts; ``persist_secondary_percent``
also writes it to the disk layer below the stack's state directory, which a restarted
Envoy reads again. Automatic failover stays in force at every value: a call goes to the
other site when its first site has no healthy host.

``envios traffic shift`` and ``envios traffic status`` are the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops import envoy_config
from ops.envoy_clusters import site_cluster_name
from ops.envoy_policy import TRAFFIC_RUNTIME_KEY
from ops.stack import Stack
from ops.topology import SERVICES, Topology
from services.common.traffic import runtime_entry

logger = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 2.0
SITE_STATS = (
    "upstream_rq_total",
    "membership_healthy",
    "membership_total",
    "outlier_detection.ejections_active",
)
"""Counters and gauges of each site cluster that ``traffic status`` reads."""


class TrafficError(RuntimeError):
    """Raised when the traffic split cannot be read or changed; the message names the fix."""


def parse_percent(text: str) -> int:
    """Return ``text`` as a percentage of traffic.

    Raises:
        argparse.ArgumentTypeError: unless ``text`` is an integer from 0 to 100.
    """
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(
            f"invalid percent {text!r}: expected an integer from 0 to 100"
        )
    return value


def secondary_percent(to: str | None, percent: int | None) -> int:
    """Return the secondary-first percentage for ``--to SITE`` and ``--percent N``.

    ``percent`` is the share sent to the ``to`` site first (100 when omitted). Without
    ``to`` it is the secondary's share.

    Raises:
        TrafficError: when neither is given or ``to`` is not primary or secondary.
    """
    if to is None and percent is None:
        raise TrafficError("nothing to change: give --to primary|secondary and/or --percent N")
    share = 100 if percent is None else percent
    if to in (None, "secondary"):
        return share
    if to == "primary":
        return 100 - share
    raise TrafficError(f"invalid site {to!r}: expected primary or secondary")


def set_secondary_percent(admin_url: str, percent: int) -> None:
    """Set the runtime key in Envoy's admin layer and check that Envoy applied it.

    Raises:
        TrafficError: when the admin API fails or reports another value afterwards.
    """
    if not 0 <= percent <= 100:
        raise TrafficError(f"invalid percent {percent}: expected an integer from 0 to 100")
    try:
        with httpx.Client(timeout=ADMIN_TIMEOUT_S, trust_env=False) as client:
            response = client.post(
                f"{admin_url}/runtime_modify", params={TRAFFIC_RUNTIME_KEY: str(percent)}
            )
            response.raise_for_status()
    except httpx.HTTPError as error:
        raise TrafficError(f"Envoy admin {admin_url} rejected the change: {error!r}") from error
    applied = runtime_value(admin_url).final
    if applied != str(percent):
        raise TrafficError(
            f"Envoy reports {TRAFFIC_RUNTIME_KEY}={applied!r} after setting {percent}"
        )
    logger.info("set %s=%d through %s", TRAFFIC_RUNTIME_KEY, percent, admin_url)


@dataclass(frozen=True)
class RuntimeValue:
    """The runtime key's value in Envoy: the effective one and each layer's."""

    final: str
    """Effective value; ``""`` when no layer sets the key."""
    layers: dict[str, str]
    """Value per layer name, in Envoy's layer order; ``""`` where a layer has none."""


def runtime_value(admin_url: str) -> RuntimeValue:
    """Read the traffic runtime key from Envoy's admin ``/runtime``.

    Raises:
        TrafficError: when the admin API is unreachable or returns an error.
    """
    final, layers = runtime_entry(_admin_json(admin_url, "/runtime"))
    return RuntimeValue(final, layers)


def runtime_root(stack: Stack) -> Path:
    """Return the directory of the stack's runtime disk layer (see ``envoy_config.write``)."""
    return stack.state_dir / "runtime"


def persist_secondary_percent(root: Path, percent: int) -> Path:
    """Write the key into a new disk layer directory and switch Envoy's symlink to it.

    The new layer starts as a copy of the current one, so other keys stay. The symlink is
    replaced by a rename, which is atomic and makes a running Envoy reload the layer.
    Returns the new layer directory.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    link = envoy_config.runtime_symlink(root)
    layer = root / f"layer-{time.time_ns()}"
    if link.is_dir():
        shutil.copytree(link.resolve(), layer)
    key_path = (
        layer / envoy_config.RUNTIME_DISK_SUBDIRECTORY / TRAFFIC_RUNTIME_KEY.replace(".", "/")
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_text(f"{percent}\n", encoding="ascii")
    temporary = root / f".{link.name}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(layer.name)
    os.replace(temporary, link)
    _remove_old_layers(root, layer)
    logger.info("persisted %s=%d in %s", TRAFFIC_RUNTIME_KEY, percent, layer)
    return layer


def _remove_old_layers(root: Path, keep: Path) -> None:
    for old in root.glob("layer-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old)


@dataclass
class SiteTraffic:
    """One site cluster of one service, as Envoy reports it."""

    healthy: int = 0
    total: int = 0
    ejected: int = 0
    calls_total: int = 0
    """Calls sent to this site since Envoy started (``upstream_rq_total``)."""
    calls_window: int = 0
    """Calls sent during the measuring window."""


@dataclass
class TrafficStatus:
    """Configured and measured split, and each site's health, per service."""

    configured_percent: str
    layers: dict[str, str]
    window_s: float
    services: dict[str, dict[str, SiteTraffic]] = field(default_factory=dict)

    def site_calls(self) -> dict[str, int]:
        """Return the calls of the window per site, summed over the services."""
        calls: dict[str, int] = {}
        for sites in self.services.values():
            for site, traffic in sites.items():
                calls[site] = calls.get(site, 0) + traffic.calls_window
        return calls


def cluster_stats(admin_url: str) -> dict[str, int]:
    """Return every counter and gauge whose name starts with ``cluster.``, by full name.

    Raises:
        TrafficError: when the admin API is unreachable or returns an error.
    """
    document = _admin_json(admin_url, "/stats", {"format": "json", "filter": r"^cluster\."})
    return {
        entry["name"]: int(entry["value"])
        for entry in document.get("stats", [])
        if "name" in entry and "value" in entry
    }


def site_stats(admin_url: str, topology: Topology) -> dict[str, dict[str, dict[str, int]]]:
    """Return ``{service: {site: {stat: value}}}`` for ``SITE_STATS`` of every site cluster.

    Raises:
        TrafficError: when the admin API is unreachable or returns an error.
    """
    values = cluster_stats(admin_url)
    result: dict[str, dict[str, dict[str, int]]] = {}
    for service in SERVICES:
        for site in topology.sites:
            prefix = f"cluster.{site_cluster_name(service, site.name)}."
            stats = {stat: values.get(prefix + stat, 0) for stat in SITE_STATS}
            result.setdefault(service, {})[site.name] = stats
    return result


def traffic_status(admin_url: str, topology: Topology, window_s: float = 2.0) -> TrafficStatus:
    """Measure the live split over ``window_s`` seconds and read health and configuration.

    Raises:
        TrafficError: when the admin API is unreachable or returns an error.
    """
    value = runtime_value(admin_url)
    before = site_stats(admin_url, topology)
    time.sleep(window_s)
    after = site_stats(admin_url, topology)
    status = TrafficStatus(value.final, value.layers, window_s)
    for service, sites in after.items():
        for site, stats in sites.items():
            status.services.setdefault(service, {})[site] = SiteTraffic(
                healthy=stats["membership_healthy"],
                total=stats["membership_total"],
                ejected=stats["outlier_detection.ejections_active"],
                calls_total=stats["upstream_rq_total"],
                calls_window=stats["upstream_rq_total"]
                - before[service][site]["upstream_rq_total"],
            )
    return status


def format_status(status: TrafficStatus) -> str:
    """Return the human-readable form of a ``TrafficStatus``."""
    layers = ", ".join(f"{name}={value or '-'}" for name, value in status.layers.items())
    lines = [
        f"configured: {status.configured_percent or 0}% of calls to the secondary site first"
        f" ({TRAFFIC_RUNTIME_KEY}; layers: {layers})",
    ]
    calls = status.site_calls()
    total = sum(calls.values())
    shares = ", ".join(
        f"{site} {count} ({100 * count / total:.1f}%)" if total else f"{site} 0"
        for site, count in calls.items()
    )
    lines.append(f"live split over {status.window_s:g} s: {shares or 'no sites'}")
    lines += [
        "",
        f"{'SERVICE':<10} {'SITE':<10} {'HEALTHY':>8} {'EJECTED':>8} {'CALLS':>8} {'TOTAL':>9}",
    ]
    for service, sites in status.services.items():
        for site, traffic in sites.items():
            lines.append(
                f"{service:<10} {site:<10} {traffic.healthy:>4}/{traffic.total:<3} "
                f"{traffic.ejected:>8} {traffic.calls_window:>8} {traffic.calls_total:>9}"
            )
    return "\n".join(lines)


def _admin_json(
    admin_url: str, path: str, params: Mapping[str, str] | None = None
) -> dict[str, Any]:
    try:
        with httpx.Client(timeout=ADMIN_TIMEOUT_S, trust_env=False) as client:
            response = client.get(f"{admin_url}{path}", params=params)
            response.raise_for_status()
            document: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise TrafficError(
            f"Envoy admin {admin_url}{path} failed: {error!r}; is the stack up (`envios status`)?"
        ) from error
    return document


# Command line.

StackFactory = Callable[[argparse.Namespace], Stack]


def add_parser(commands: Any, stack_factory: StackFactory) -> None:
    """Register ``envios traffic shift`` and ``envios traffic status`` on ``commands``."""
    traffic = commands.add_parser(
        "traffic",
        help="shift traffic between sites and show the split",
        description=f"Change or show the runtime key {TRAFFIC_RUNTIME_KEY}: the percentage of "
        "calls sent to the secondary site first. Task workers follow it within a second. "
        "Failover to the other site stays automatic.",
    )
    actions = traffic.add_subparsers(dest="traffic_command", required=True, metavar="ACTION")
    shift = actions.add_parser(
        "shift",
        help="send a share of the traffic to one site first",
        description="Set the split through Envoy's admin API (127.0.0.1). Examples: "
        "`--to secondary` (manual failover), `--to primary` (back to normal), `--percent 30` "
        "(30% to the secondary first).",
    )
    shift.add_argument(
        "--to", choices=("primary", "secondary"), help="site to send traffic to first"
    )
    shift.add_argument(
        "--percent",
        type=parse_percent,
        help="share in percent (0-100) sent to the --to site first (default 100); without "
        "--to, the share sent to the secondary first",
    )
    shift.add_argument(
        "--persist",
        action="store_true",
        help="also write the value to the runtime disk layer, which a restarted Envoy reads",
    )
    shift.set_defaults(handler=lambda args: _shift(args, stack_factory(args)))
    status = actions.add_parser(
        "status",
        help="show the configured and live split, healthy hosts and ejections per site",
        description="Read the runtime key and, over a short window, the per-site call counters.",
    )
    status.add_argument(
        "--window-s", type=float, default=2.0, help="seconds to measure the live split (default 2)"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=lambda args: _status(args, stack_factory(args)))


def _shift(args: argparse.Namespace, stack: Stack) -> int:
    try:
        percent = secondary_percent(args.to, args.percent)
        set_secondary_percent(stack.envoy_admin_url, percent)
        if args.persist:
            persist_secondary_percent(runtime_root(stack), percent)
    except (TrafficError, OSError) as error:
        logger.error("traffic shift failed: %s", error)
        return 1
    where = "live and on disk" if args.persist else "live only; lost when Envoy restarts"
    print(f"{percent}% of calls now go to the secondary site first ({where})")
    return 0


def _status(args: argparse.Namespace, stack: Stack) -> int:
    if args.window_s < 0:
        logger.error("invalid --window-s %s: expected 0 or more seconds", args.window_s)
        return 1
    try:
        status = traffic_status(stack.envoy_admin_url, stack.topology, args.window_s)
    except TrafficError as error:
        logger.error("traffic status failed: %s", error)
        return 1
    print(json.dumps(asdict(status), indent=2) if args.json else format_status(status))
    return 0
