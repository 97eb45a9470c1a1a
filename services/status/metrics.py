"""Prometheus metrics of the status read path and of the status projector.

Each object registers its metrics in the registry it is given, so a test or a process
that builds several services reads its own numbers (``registry.get_sample_value``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

READ_SOURCES = ("cache", "database", "fallback")
"""Values of the ``source`` label: the ``Source`` values of ``services.status.reader``."""


class StatusMetrics:
    """Reads by source, database queries, fallbacks and whether Redis is skipped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reads = Counter(
            "envios_status_reads",
            "Status reads answered, by kind (shipment, task) and source",
            ["kind", "source"],
            registry=self.registry,
        )
        self.database_reads = Counter(
            "envios_status_database_reads",
            "Database queries made by status reads; concurrent misses of one key share one",
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "envios_status_fallbacks",
            "Status reads answered from the database because Redis failed or was skipped",
            registry=self.registry,
        )
        self.degraded = Gauge(
            "envios_status_degraded",
            "1 while reads skip Redis after a Redis failure, else 0",
            registry=self.registry,
        )
        self.hit_ratio = Gauge(
            "envios_status_cache_hit_ratio",
            "Share of status reads answered from the cache since the process started",
            registry=self.registry,
        )
        self.hit_ratio.set_function(self.cache_hit_ratio)
        self._hits = 0
        self._total = 0

    def count_read(self, kind: str, source: str) -> None:
        """Count one answered read of ``kind`` from ``source`` (one of ``READ_SOURCES``)."""
        self.reads.labels(kind, source).inc()
        self._total += 1
        if source == "cache":
            self._hits += 1
        elif source == "fallback":
            self.fallbacks.inc()

    def cache_hit_ratio(self) -> float:
        """Return cache hits divided by reads, or 0.0 before the first read."""
        return self._hits / self._total if self._total else 0.0


class ProjectorMetrics:
    """Events projected by outcome, Redis retries and the lag from commit to cache."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "envios_projector_events",
            "Transition events handled, by outcome (applied, current, duplicate, malformed)",
            ["outcome"],
            registry=self.registry,
        )
        self.redis_retries = Counter(
            "envios_projector_redis_retries",
            "Attempts to project an event that failed because Redis was unavailable",
            registry=self.registry,
        )
        self.lag = Histogram(
            "envios_projector_lag_seconds",
            "Time from the commit of a transition to its projection into the cache",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.last_lag = Gauge(
            "envios_projector_last_lag_seconds",
            "Lag of the most recent event the projector handled",
            registry=self.registry,
        )

    def observe_lag(self, seconds: float) -> None:
        self.lag.observe(max(seconds, 0.0))
        self.last_lag.set(max(seconds, 0.0))
