"""Key numbers of a running stack for ``envios status``, from two samples of its metrics.

Every application process's ``/metrics`` and Envoy's site cluster counters are read twice,
``window_s`` apart (1 s by default):

- requests per second and error ratio per site: the change of ``grpc_server_handled_total``
  of the site's service replicas, counting only the envios API services (not health
  checks or reflection). Errors are the codes that mean the server failed (the server-side
  error codes of the OpenTelemetry gRPC conventions); NOT_FOUND, INVALID_ARGUMENT and the
  other caller mistakes are not errors;
- which site serves: each site's share of the calls Envoy sent to the site clusters
  (``upstream_rq_total``) during the window, and the configured split. Without calls in
  the window, the site Envoy would send the next call to: the first site, in the
  configured order, with a healthy host;
- tasks in flight, summed over the workers. Tasks queued and dead-lettered are queue
  depths that every worker reads, so the largest reading is shown;
- cache hit ratio: status reads answered from Redis divided by all status reads, summed
  over the status replicas since they started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ops import health, traffic
from ops.topology import GRPC_SERVICE_NAMES, SERVICES, MetricsEndpoint, Topology

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 1.0

SERVER_ERROR_CODES = frozenset(
    {
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "RESOURCE_EXHAUSTED",
    }
)
"""gRPC codes counted as errors. RESOURCE_EXHAUSTED is added to the OpenTelemetry server
error codes because here it means the replica's concurrency limit rejected the call."""

API_SERVICES = frozenset(GRPC_SERVICE_NAMES.values())

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Sample values of one scrape, by sample name and label set."""


@dataclass(frozen=True)
class SiteNumbers:
    """Traffic of one site during the window."""

    requests_per_s: float
    """RPCs the site's service replicas completed per second."""
    error_ratio: float | None
    """Share of those RPCs that ended with a server error code; None without RPCs."""
    envoy_share: float | None
    """Share of the calls Envoy sent to this site's clusters; None when Envoy sent none
    or its admin API did not reply."""


@dataclass
class KeyNumbers:
    """The numbers ``envios status`` shows besides health."""

    window_s: float
    sites: dict[str, SiteNumbers] = field(default_factory=dict)
    serving_site: str = ""
    """Site with the largest share of Envoy's calls in the window, else the first healthy
    site in the configured order. Empty when there were no calls and no healthy host."""
    serving_site_by: str = ""
    """Source of ``serving_site``: ``calls``, ``health``, or empty."""
    configured_secondary_percent: int | None = None
    """Envoy runtime value: percent of calls sent to the secondary site first; None when
    the admin API did not reply."""
    tasks_in_flight: int = 0
    tasks_queued: int = 0
    tasks_dead_lettered: int = 0
    """Messages waiting in the dead-letter queue."""
    cache_hit_ratio: float | None = None
    """None before the first status read."""
    unreachable: list[str] = field(default_factory=list)
    """Processes whose ``/metrics`` did not reply; their numbers are missing."""


def scrape(endpoint: MetricsEndpoint, timeout_s: float = SCRAPE_TIMEOUT_S) -> Samples:
    """Fetch and parse ``/metrics`` of one process.

    Raises:
        httpx.HTTPError: the endpoint did not reply or returned an error status.
        ValueError: the reply is not in the Prometheus text format.
    """
    url = f"http://{endpoint.address}/metrics"
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        response = client.get(url)
        response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Return the sum of the samples named ``name`` whose labels include ``labels``."""
    required = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and required <= sample_labels
    )


def handled_calls(samples: Samples) -> tuple[float, float]:
    """Return the API RPCs completed and those of them with a server error code."""
    calls = errors = 0.0
    for (name, labels), value in samples.items():
        if name != "grpc_server_handled_total":
            continue
        label_map = dict(labels)
        if label_map.get("grpc_service") not in API_SERVICES:
            continue
        calls += value
        if label_map.get("grpc_code") in SERVER_ERROR_CODES:
            errors += value
    return calls, errors


def measure(topology: Topology, admin_url: str, window_s: float = 1.0) -> KeyNumbers:
    """Sample every ``/metrics`` endpoint and Envoy twice, ``window_s`` apart."""
    endpoints = topology.metrics_endpoints()
    before = _scrape_all(endpoints)
    envoy_before = _envoy_calls(admin_url, topology)
    time.sleep(window_s)
    after = _scrape_all(endpoints)
    envoy_after = _envoy_calls(admin_url, topology)
    numbers = KeyNumbers(window_s)
    numbers.unreachable = sorted(name for name, samples in after.items() if samples is None)
    _site_numbers(numbers, topology, endpoints, before, after, envoy_before, envoy_after)
    _task_and_cache_numbers(numbers, endpoints, after)
    numbers.configured_secondary_percent = _configured_percent(admin_url)
    if numbers.serving_site:
        numbers.serving_site_by = "calls"
    else:
        numbers.serving_site = _serving_by_health(topology, admin_url, numbers)
        numbers.serving_site_by = "health" if numbers.serving_site else ""
    return numbers


def _serving_by_health(topology: Topology, admin_url: str, numbers: KeyNumbers) -> str:
    """Return the first site, in the configured order, with a healthy service host."""
    try:
        hosts = health.envoy_hosts(admin_url)
    except (httpx.HTTPError, ValueError) as error:
        logger.warning("Envoy admin /clusters failed: %r", error)
        return ""
    healthy = {host.address for host in hosts if host.healthy}
    sites = list(topology.sites)
    if numbers.configured_secondary_percent == 100:
        sites.reverse()
    for site in sites:
        addresses = {
            replica.address for replica in topology.replicas() if replica.site == site.name
        }
        if addresses & healthy:
            return site.name
    return ""


def _scrape_all(endpoints: Iterable[MetricsEndpoint]) -> dict[str, Samples | None]:
    result: dict[str, Samples | None] = {}
    for endpoint in endpoints:
        try:
            result[endpoint.name] = scrape(endpoint)
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("metrics of %s at %s failed: %r", endpoint.name, endpoint.address, error)
            result[endpoint.name] = None
    return result


def _envoy_calls(admin_url: str, topology: Topology) -> dict[str, int] | None:
    """Return the calls Envoy sent to each site since it started, summed over services."""
    try:
        stats = traffic.site_stats(admin_url, topology)
    except traffic.TrafficError as error:
        logger.warning("%s", error)
        return None
    calls = {site.name: 0 for site in topology.sites}
    for service in SERVICES:
        for site, values in stats.get(service, {}).items():
            calls[site] = calls.get(site, 0) + values["upstream_rq_total"]
    return calls


def _site_numbers(
    numbers: KeyNumbers,
    topology: Topology,
    endpoints: list[MetricsEndpoint],
    before: Mapping[str, Samples | None],
    after: Mapping[str, Samples | None],
    envoy_before: Mapping[str, int] | None,
    envoy_after: Mapping[str, int] | None,
) -> None:
    shares = _shares(envoy_before, envoy_after)
    for site in topology.sites:
        calls = errors = 0.0
        for endpoint in endpoints:
            first, second = before.get(endpoint.name), after.get(endpoint.name)
            if (
                endpoint.site != site.name
                or endpoint.job not in SERVICES
                or not first
                or not second
            ):
                continue
            calls_after, errors_after = handled_calls(second)
            calls_before, errors_before = handled_calls(first)
            # A replica that restarted in the window starts its counters again from zero.
            calls += max(calls_after - calls_before, 0.0)
            errors += max(errors_after - errors_before, 0.0)
        ratio = errors / calls if calls else None
        numbers.sites[site.name] = SiteNumbers(
            calls / numbers.window_s, ratio, shares.get(site.name)
        )
    if shares:
        numbers.serving_site = max(shares, key=lambda name: shares[name])


def _shares(before: Mapping[str, int] | None, after: Mapping[str, int] | None) -> dict[str, float]:
    if before is None or after is None:
        return {}
    deltas = {site: max(after[site] - before.get(site, 0), 0) for site in after}
    calls = sum(deltas.values())
    return {site: delta / calls for site, delta in deltas.items()} if calls else {}


def _task_and_cache_numbers(
    numbers: KeyNumbers, endpoints: list[MetricsEndpoint], after: Mapping[str, Samples | None]
) -> None:
    hits = reads = 0.0
    for endpoint in endpoints:
        samples = after.get(endpoint.name)
        if not samples:
            continue
        if endpoint.job == "worker":
            numbers.tasks_in_flight += round(total(samples, "envios_tasks_in_flight"))
            queued = round(total(samples, "envios_task_queue_depth"))
            numbers.tasks_queued = max(numbers.tasks_queued, queued)
            dead = round(total(samples, "envios_task_dead_letter_depth"))
            numbers.tasks_dead_lettered = max(numbers.tasks_dead_lettered, dead)
        elif endpoint.job == "status":
            hits += total(samples, "envios_status_reads_total", source="cache")
            reads += total(samples, "envios_status_reads_total")
    numbers.cache_hit_ratio = hits / reads if reads else None


def _configured_percent(admin_url: str) -> int | None:
    try:
        value = traffic.runtime_value(admin_url).final or "0"
    except traffic.TrafficError as error:
        logger.warning("%s", error)
        return None
    try:
        return int(value)
    except ValueError:
        logger.warning("Envoy runtime value of the traffic split is not an integer: %r", value)
        return None


def as_dict(numbers: KeyNumbers) -> dict[str, Any]:
    """Return the numbers as plain JSON values."""
    return {
        "window_s": numbers.window_s,
        "sites": {
            name: {
                "requests_per_s": round(site.requests_per_s, 2),
                "error_ratio": site.error_ratio,
                "envoy_share": site.envoy_share,
            }
            for name, site in numbers.sites.items()
        },
        "serving_site": numbers.serving_site,
        "serving_site_by": numbers.serving_site_by,
        "configured_secondary_percent": numbers.configured_secondary_percent,
        "tasks_in_flight": numbers.tasks_in_flight,
        "tasks_queued": numbers.tasks_queued,
        "tasks_dead_lettered": numbers.tasks_dead_lettered,
        "cache_hit_ratio": numbers.cache_hit_ratio,
        "unreachable": numbers.unreachable,
    }


def format_numbers(numbers: KeyNumbers) -> str:
    """Return the human-readable lines of the key numbers."""
    lines = [f"{'SITE':<12} {'REQ/S':>8} {'ERRORS':>8} {'ENVOY SHARE':>12}"]
    for name, site in numbers.sites.items():
        errors = f"{100 * site.error_ratio:.1f}%" if site.error_ratio is not None else "-"
        share = f"{100 * site.envoy_share:.1f}%" if site.envoy_share is not None else "-"
        lines.append(f"{name:<12} {site.requests_per_s:>8.1f} {errors:>8} {share:>12}")
    serving = numbers.serving_site or "unknown (no calls and no healthy host)"
    if numbers.serving_site_by == "health":
        serving += " (by health checks: no calls in the window)"
    configured = (
        "unknown"
        if numbers.configured_secondary_percent is None
        else str(numbers.configured_secondary_percent)
    )
    hit_ratio = (
        f"{100 * numbers.cache_hit_ratio:.1f}%" if numbers.cache_hit_ratio is not None else "-"
    )
    lines += [
        f"serving site     {serving}; {configured}% of calls configured to the secondary first",
        f"tasks            {numbers.tasks_in_flight} in flight, {numbers.tasks_queued} queued,"
        f" {numbers.tasks_dead_lettered} dead-lettered",
        f"cache hit ratio  {hit_ratio}",
        f"measured over    {numbers.window_s:g} s",
    ]
    if numbers.unreachable:
        lines.append(f"no metrics from  {', '.join(numbers.unreachable)}")
    return "\n".join(lines)
