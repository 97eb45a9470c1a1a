"""Envoy's clusters: the gateways, and per service one cluster per site plus two aggregates.

A site's load assignment and the aggregates' priority order make the secondary site take
traffic only while the primary has no healthy host; health checks and outlier detection
decide which hosts are healthy.
"""

from __future__ import annotations

from collections.abc import Sequence

from ops.envoy_policy import (
    SECONDARY_FIRST_SUFFIX,
    EnvoyTuning,
    Json,
    address,
    duration,
)
from ops.topology import GRPC_SERVICE_NAMES, Site, Topology

_TYPE = "type.googleapis.com/envoy."
HTTP_OPTIONS_TYPE = _TYPE + "extensions.upstreams.http.v3.HttpProtocolOptions"
AGGREGATE_TYPE = _TYPE + "extensions.clusters.aggregate.v3.ClusterConfig"

GATEWAY_QUEUE_DIVISOR = 5
"""The gateway cluster queues at most ``max_concurrent_requests // 5`` requests (100 for 500)."""

GRPC_LB_POLICIES = {"task": "LEAST_REQUEST"}
"""Load balancing policy of each service's site clusters, ROUND_ROBIN when absent."""
# NOTE: LEAST_REQUEST samples 2 hosts with replacement, so with 2 hosts per site half of
# its picks are random. benchmarks/run_task_balancing.py measured round robin's RunTask
# slot waits at 0.82 to 1.19 times its own. The least_request extension with FULL_SCAN had
# the lowest mean wait, so it is the candidate to replace it.


def _endpoints(name: str, ports: Sequence[int], weights: Sequence[int] | None = None) -> Json:
    endpoints = []
    for position, port in enumerate(ports):
        endpoint: Json = {"endpoint": {"address": address(port)}}
        if weights is not None:
            endpoint["load_balancing_weight"] = weights[position]
        endpoints.append(endpoint)
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}


def _site_endpoints(name: str, ports: Sequence[int]) -> Json:
    """Return a site's load assignment with an overprovisioning factor of 100 x its hosts.

    Envoy gives a priority ``min(100, factor% x healthy / total)`` of the traffic, so with
    this factor the site keeps all of it while at least one of its hosts is healthy.
    """
    assignment = _endpoints(name, ports)
    assignment["policy"] = {"overprovisioning_factor": 100 * len(ports)}
    return assignment


def _health_check(tuning: EnvoyTuning, checker: Json) -> Json:
    interval = duration(tuning.health_check_interval_s)
    return {
        "timeout": duration(tuning.health_check_timeout_s),
        "interval": interval,
        # An idle cluster (the secondary site) is checked as often as a busy one, so its
        # health is current when the primary fails.
        "no_traffic_interval": interval,
        "unhealthy_threshold": tuning.unhealthy_threshold,
        "healthy_threshold": 1,
        **checker,
    }


def _common_lb_config() -> Json:
    # Panic threshold 0: with no healthy host the call fails fast instead of going to hosts
    # known to be down. Merge window 0: health changes reach the balancer at once.
    return {"healthy_panic_threshold": {"value": 0}, "update_merge_window": "0s"}


def _thresholds(connections: int, requests: int, retries: int) -> Json:
    return {
        "priority": "DEFAULT",
        "max_connections": connections,
        "max_pending_requests": requests,
        "max_requests": requests,
        "max_retries": retries,
    }


def gateway_cluster(topology: Topology, tuning: EnvoyTuning) -> Json:
    """Return the gateway cluster: weighted round robin over HTTP/1.1 with a per-host limit.

    Over HTTP/1.1 one connection carries one request at a time, so the per-host connection
    limit is the per-gateway concurrency limit. Outlier detection reacts only to local
    failures (connect errors, resets, timeouts): a gateway that returns 503 because a
    service is down is healthy itself.
    """
    limit = topology.gateway_max_concurrent_requests
    count = len(topology.gateway_ports)
    http_check = {"http_health_check": {"path": "/healthz"}}
    return {
        "name": "gateway",
        "type": "STATIC",
        "connect_timeout": duration(tuning.connect_timeout_s),
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": _protocol_options({"http_protocol_options": {}}),
        "load_assignment": _endpoints("gateway", topology.gateway_ports, topology.gateway_weights),
        "health_checks": [_health_check(tuning, http_check)],
        "common_lb_config": _common_lb_config(),
        "circuit_breakers": {
            "thresholds": [_gateway_thresholds(limit, count)],
            "per_host_thresholds": [{"priority": "DEFAULT", "max_connections": limit}],
        },
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 3,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "interval": duration(tuning.outlier_interval_s),
            "base_ejection_time": duration(tuning.base_ejection_time_s),
            "max_ejection_percent": 50,
        },
    }


def _gateway_thresholds(limit: int, count: int) -> Json:
    """Return the gateway cluster's limits: ``limit`` per gateway plus a short queue.

    A request past ``limit`` in flight on every gateway waits in Envoy's pending queue of
    ``limit // GATEWAY_QUEUE_DIVISOR`` requests; past that, Envoy answers at once with 429
    and a JSON error (see ``_local_reply_config``) instead of letting callers queue up.
    """
    thresholds = _thresholds(limit * count, limit * count, limit)
    thresholds["max_pending_requests"] = max(1, limit // GATEWAY_QUEUE_DIVISOR)
    return thresholds


def _protocol_options(explicit_http_config: Json) -> Json:
    options = {"@type": HTTP_OPTIONS_TYPE, "explicit_http_config": explicit_http_config}
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}


def service_clusters(topology: Topology, service: str, tuning: EnvoyTuning) -> list[Json]:
    """Return the service's two aggregate clusters followed by one cluster per site.

    The aggregate named after the service lists the primary first; the one with
    ``SECONDARY_FIRST_SUFFIX`` lists the secondary first and carries shifted traffic.
    """
    sites = (topology.primary, topology.secondary)
    members = [_site_cluster(topology, site, service, tuning) for site in sites]
    names = [member["name"] for member in members]
    normal = _aggregate_cluster(topology, service, names)
    shifted = _aggregate_cluster(topology, service + SECONDARY_FIRST_SUFFIX, names[::-1])
    return [normal, shifted, *members]


def _aggregate_cluster(topology: Topology, name: str, members: Sequence[str]) -> Json:
    hosts = sum(len(site.ports[site_service(members[0])]) for site in topology.sites)
    requests = topology.max_concurrent_rpcs * hosts
    return {
        "name": name,
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": AGGREGATE_TYPE, "clusters": list(members)},
        },
        "common_lb_config": _common_lb_config(),
        # Retries of both sites count against the aggregate's max_retries (default 3).
        "circuit_breakers": {
            "thresholds": [_thresholds(hosts, requests, topology.max_concurrent_rpcs)]
        },
    }


def site_cluster_name(service: str, site: str) -> str:
    """Return the name of the cluster of ``service``'s replicas in ``site``."""
    return f"{service}_{site}"


def site_service(cluster: str) -> str:
    """Return the service of a site cluster name such as ``shipment_primary``."""
    return cluster.split("_", 1)[0]


def _site_cluster(topology: Topology, site: Site, service: str, tuning: EnvoyTuning) -> Json:
    name = site_cluster_name(service, site.name)
    ports = site.ports[service]
    rpcs = topology.max_concurrent_rpcs
    http2 = {"http2_protocol_options": {"max_concurrent_streams": rpcs}}
    grpc_check = {"grpc_health_check": {"service_name": GRPC_SERVICE_NAMES[service]}}
    cluster: Json = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": duration(tuning.connect_timeout_s),
        "lb_policy": GRPC_LB_POLICIES.get(service, "ROUND_ROBIN"),
        "typed_extension_protocol_options": _protocol_options(http2),
        "load_assignment": _site_endpoints(name, ports),
        "health_checks": [_health_check(tuning, grpc_check)],
        "common_lb_config": _common_lb_config(),
        # One HTTP/2 connection per host with max_concurrent_streams = max_concurrent_rpcs, so
        # a replica receives at most that many calls at once. The rest wait in the pending queue.
        "circuit_breakers": {
            "thresholds": [_thresholds(len(ports), rpcs * len(ports), rpcs)],
            "per_host_thresholds": [{"priority": "DEFAULT", "max_connections": 1}],
        },
        "outlier_detection": _service_outlier_detection(tuning),
    }
    if cluster["lb_policy"] == "LEAST_REQUEST":
        cluster["least_request_lb_config"] = {"choice_count": 2}
    return cluster


def _service_outlier_detection(tuning: EnvoyTuning) -> Json:
    """Return outlier detection that ejects on its own, also in a site of two hosts.

    Success-rate detection needs 5 hosts, so it is off; failure percentage replaces it.
    A host that reports SERVING to health checks but fails calls stays ejected for the
    whole ejection time.
    """
    return {
        "consecutive_5xx": 5,
        "enforcing_consecutive_5xx": 100,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "failure_percentage_threshold": 50,
        "enforcing_failure_percentage": 100,
        "failure_percentage_minimum_hosts": 1,
        "failure_percentage_request_volume": 10,
        "enforcing_success_rate": 0,
        "interval": duration(tuning.outlier_interval_s),
        "base_ejection_time": duration(tuning.base_ejection_time_s),
        "max_ejection_percent": 100,
        "max_ejection_time": duration(tuning.max_ejection_time_s),
        "successful_active_health_check_uneject_host": False,
    }
