"""Prometheus metrics of mfa-gate, defined once.

Counters and histograms that processes observe directly (Rublon calls, WebSocket
reconnects) live here; figures about actions are derived from the timestamps the store
records (StoreCollector), so Celery's prefork children need no shared state. When
``PROMETHEUS_MULTIPROC_DIR`` is set, prometheus-client's multiprocess mode collects the
children's own observations too (see registry_for_exposition).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlmodel import col, select

from store import Action, ActionStatus, Store
from store.models import utcnow
from store.transitions import PENDING

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
APPROVAL_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WINDOW = timedelta(hours=1)

RUBLON_SECONDS = Histogram(
    "mfa_gate_rublon_request_duration_seconds", "Rublon API call latency.", ["call"], buckets=LATENCY_BUCKETS
)
RUBLON_ERRORS = Counter(
    "mfa_gate_rublon_errors_total", "Rublon API calls that failed, by exception name.", ["call", "exception"]
)


def observe_rublon_call(path: str, seconds: float, error: BaseException | None) -> None:
    """The Rublon client's observer: latency per call, errors by exception name."""
    call = path.removeprefix("/api/").replace("/", ".")
    RUBLON_SECONDS.labels(call=call).observe(seconds)
    if error is not None:
        name = getattr(error, "exception", None) or type(error).__name__
        RUBLON_ERRORS.labels(call=call, exception=str(name)).inc()


class StoreCollector(Collector):
    """Figures derived from the store at scrape time: statuses, pending approvals, latencies."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        counts = self.store.count_by_status()
        by_status = GaugeMetricFamily("mfa_gate_actions", "Actions in the store, by status.", labels=["status"])
        for status in ActionStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield GaugeMetricFamily(
            "mfa_gate_pending_approvals",
            "Actions submitted or awaiting approval.",
            value=sum(counts.get(status.value, 0) for status in PENDING),
        )
        refused = CounterMetricFamily(
            "mfa_gate_approvals_refused", "Approval requests that did not release.", labels=["outcome"]
        )
        for status in (ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.BLOCKED):
            refused.add_metric([status.value], counts.get(status.value, 0))
        yield refused
        approvals, releases = self._recent_latencies()
        yield _histogram(
            "mfa_gate_approval_wait_seconds",
            "Time from submission to the person's approval (last hour).",
            approvals,
            APPROVAL_BUCKETS,
        )
        yield _histogram(
            "mfa_gate_release_latency_seconds",
            "Time from release (confirmation) to execution start (last hour).",
            releases,
            LATENCY_BUCKETS,
        )

    def _recent_latencies(self) -> tuple[list[float], list[float]]:
        since = utcnow() - WINDOW
        query = select(Action.created_at, Action.approved_at, Action.released_at, Action.started_at).where(
            col(Action.released_at).is_not(None), col(Action.released_at) >= since
        )
        with self.store.session() as session:
            rows = session.exec(query).all()
        approvals = [(approved - created).total_seconds() for created, approved, _, _ in rows if approved]
        releases = [(started - released).total_seconds() for _, _, released, started in rows if started and released]
        return approvals, releases


def _histogram(
    name: str, documentation: str, values: Iterable[float], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    values = sorted(values)
    cumulative = [(str(bound), sum(1 for value in values if value <= bound)) for bound in buckets]
    cumulative.append(("+Inf", len(values)))
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], cumulative, sum_value=sum(values))
    return family


def registry_for_exposition(store: Store) -> CollectorRegistry:
    """The registry a /metrics endpoint serves: this process's (or every process's) metrics plus the store's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(StoreCollector(store))
    return registry


class _Forward(Collector):
    """Serve another registry's metrics from this one (the process's default metrics)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        yield from self.source.collect()
