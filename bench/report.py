"""Figures beside their targets: percentiles, the pass/fail rules of issue 7, the table and the JSON.

Every target is a ratio to plain Celery measured in the same run; the millisecond bound
it means in this run is printed beside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The issue's targets.
RELEASE_P50_RATIO = 4.0
RELEASE_P99_RATIO = 6.0
ALLOW_MEDIAN_RATIO = 3.0
THROUGHPUT_SHARE = 0.25
SCALE_RSS_MB = 256.0
SCALE_P99_RATIO = 10.0


@dataclass
class ReleaseRun:
    """Approvals and what each took (seconds), in the order they were approved."""

    pending: int
    rate: float
    latency: list[float] = field(default_factory=list)  # confirmed sent -> started_at
    listener: list[float] = field(default_factory=list)  # confirmed sent -> released_at (listener's share)
    queue: list[float] = field(default_factory=list)  # released_at -> started_at (broker and worker's share)
    approve_call: list[float] = field(default_factory=list)  # round trip of the control approve call
    push: list[float] = field(default_factory=list)  # approve call began -> confirmed sent (the simulator's)
    unsubscribed: int = 0  # approvals the listener had not subscribed to yet (timed from the approve call)


@dataclass
class RateRun:
    """``count`` items done end to end in ``seconds``; ``cpu_ms``: CPU milliseconds per item, by process
    of the deployment; ``client_cpu_ms``: the benchmark process's own (load generator and polling)."""

    count: int
    seconds: float
    cpu_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_ms: float = 0.0

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@dataclass
class ScaleRun:
    """One listener holding ``pending`` approvals."""

    pending: int
    create_seconds: float
    peak_rss_mb_learning: float  # the listener that learned them one by one
    peak_rss_mb_resumed: float  # the restarted listener, after resuming and releasing them all
    resume_seconds: float  # new listener process spawned -> every transaction subscribed again
    release: ReleaseRun


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks.

    Raises ValueError for an empty sequence.
    """
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return seconds * 1000


@dataclass(frozen=True)
class Figure:
    """One measured figure; ``passed`` is None for figures reported without a target."""

    key: str
    label: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None

    def shown(self) -> str:
        if self.unit == "ms":
            return f"{self.value:.2f} ms"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "actions":
            return f"{self.value:,.0f}"
        if self.unit == "/s":
            return f"{self.value:.1f}/s"
        return f"{self.value:.1f} {self.unit}"


@dataclass
class Results:
    """What the run measured; a phase left out of the run stays None."""

    baseline_latency: list[float]
    baseline_chain: RateRun | None = None
    release: ReleaseRun | None = None
    allow: list[float] | None = None
    gated: RateRun | None = None
    scale: ScaleRun | None = None


def figures(results: Results) -> list[Figure]:
    """Every figure of the run, with its target and pass/fail where the issue sets one."""
    base = results.baseline_latency
    b50, b95, b99 = (ms(percentile(base, q)) for q in (50, 95, 99))
    out = [
        Figure("baseline.noop_p50_ms", "plain Celery no-op send->start p50", b50, "ms"),
        Figure("baseline.noop_p95_ms", "plain Celery no-op send->start p95", b95, "ms"),
        Figure("baseline.noop_p99_ms", "plain Celery no-op send->start p99", b99, "ms"),
    ]
    if results.release is not None:
        out += _release("release", "release", results.release, b50, b99, p99_ratio=RELEASE_P99_RATIO)
    if results.allow is not None:
        median = ms(percentile(results.allow, 50))
        ratio = median / b50
        out += [
            Figure("allow.p50_ms", "allow path REST submit->start p50", median, "ms"),
            Figure("allow.p99_ms", "allow path REST submit->start p99", ms(percentile(results.allow, 99)), "ms"),
            Figure(
                "allow.ratio",
                "allow path p50 / plain Celery p50",
                ratio,
                "x",
                f"<= {ALLOW_MEDIAN_RATIO:g}x (= {ALLOW_MEDIAN_RATIO * b50:.2f} ms)",
                ratio <= ALLOW_MEDIAN_RATIO,
            ),
        ]
    if results.gated is not None and results.baseline_chain is not None:
        share = results.gated.per_second / results.baseline_chain.per_second
        out += [
            Figure("throughput.chain_per_s", "plain Celery two-task chains", results.baseline_chain.per_second, "/s"),
            Figure("throughput.gated_per_s", "gated actions end to end", results.gated.per_second, "/s"),
            Figure("throughput.chain_cpu_ms", "  CPU per chain, all processes", _cpu(results.baseline_chain), "ms"),
            Figure("throughput.gated_cpu_ms", "  CPU per gated action, all processes", _cpu(results.gated), "ms"),
            Figure(
                "throughput.chain_client_cpu_ms",
                "  load generator's CPU per chain",
                results.baseline_chain.client_cpu_ms,
                "ms",
            ),
            Figure(
                "throughput.gated_client_cpu_ms",
                "  load generator's CPU per gated action",
                results.gated.client_cpu_ms,
                "ms",
            ),
            Figure(
                "throughput.share",
                "gated rate / chain rate",
                share,
                "x",
                f">= {THROUGHPUT_SHARE:g}x (= {THROUGHPUT_SHARE * results.baseline_chain.per_second:.1f}/s)",
                share >= THROUGHPUT_SHARE,
            ),
        ]
    if results.scale is not None:
        scale = results.scale
        peak = max(scale.peak_rss_mb_learning, scale.peak_rss_mb_resumed)
        out += [
            Figure("scale.pending", "pending approvals held by one listener", scale.pending, "actions"),
            Figure(
                "scale.peak_rss_mb",
                "listener peak RSS (VmHWM)",
                peak,
                "MiB",
                f"<= {SCALE_RSS_MB:g} MiB",
                peak <= SCALE_RSS_MB,
            ),
            Figure("scale.create_s", "create all (submit, gate, subscribe)", scale.create_seconds, "s"),
            Figure("scale.resume_s", "restart: new listener spawned -> all resubscribed", scale.resume_seconds, "s"),
            Figure("scale.approved", "approved while the rest stay pending", len(scale.release.latency), "actions"),
        ]
        out += _release("scale", "release at scale", scale.release, b50, b99, p99_ratio=SCALE_P99_RATIO)
    return out


def _release(prefix: str, label: str, run: ReleaseRun, b50: float, b99: float, *, p99_ratio: float) -> list[Figure]:
    p50, p95, p99 = (ms(percentile(run.latency, q)) for q in (50, 95, 99))
    out = []
    if prefix == "release":
        out.append(
            Figure(
                f"{prefix}.p50_ms",
                f"{label} confirmed->start p50",
                p50,
                "ms",
                f"<= {RELEASE_P50_RATIO:g}x p50 (= {RELEASE_P50_RATIO * b50:.2f} ms)",
                p50 <= RELEASE_P50_RATIO * b50,
            )
        )
    else:
        out.append(Figure(f"{prefix}.p50_ms", f"{label} confirmed->start p50", p50, "ms"))
    out += [
        Figure(f"{prefix}.p95_ms", f"{label} confirmed->start p95", p95, "ms"),
        Figure(
            f"{prefix}.p99_ms",
            f"{label} confirmed->start p99",
            p99,
            "ms",
            f"<= {p99_ratio:g}x p99 (= {p99_ratio * b99:.2f} ms)",
            p99 <= p99_ratio * b99,
        ),
        Figure(f"{prefix}.listener_p50_ms", "  of which listener (->released_at) p50", _p50(run.listener), "ms"),
        Figure(f"{prefix}.queue_p50_ms", "  of which broker+worker (->started_at) p50", _p50(run.queue), "ms"),
        Figure(f"{prefix}.approve_call_p50_ms", "  control approve round trip p50", _p50(run.approve_call), "ms"),
        Figure(
            f"{prefix}.push_p50_ms", "  approve call began -> confirmed sent p50 (not counted)", _p50(run.push), "ms"
        ),
        Figure(
            f"{prefix}.unsubscribed",
            "  approved before the listener subscribed (timed from the call)",
            run.unsubscribed,
            "actions",
        ),
    ]
    return out


def _cpu(run: RateRun) -> float:
    return sum(run.cpu_ms.values())


def _p50(values: Sequence[float]) -> float:
    return ms(percentile(values, 50))


MEASURED = """\
What is measured (time.time() wall clock across processes on this machine):
  plain Celery    : just before send_task -> first line of the no-op task (stamped in Redis); same Redis,
                    same Celery settings and worker command line (prefork -c 2) as mfa-gate's execute worker.
  confirmed->start: the simulator about to write 'confirmed' on the listener's WebSocket (its
                    time.time() stamp, confirmedSentAt) -> the action's started_at in the store (the
                    execute task's queued->executing claim, after it read the action and its release).
                    'listener' ends at released_at (release transaction begins); 'broker+worker' is the rest.
  allow path      : just before REST POST /v1/actions -> started_at.
  throughput      : first submission/send -> last gated action finished_at / last chain's second task ran;
                    CPU = user+system time of every deployment process per item; the load generator's
                    (this process: REST submissions over http.client, or chain sends, and store polling)
                    is shown apart, since it shares the same two cores.
  scale           : actions created in-process through tasks.submission.submit (no HTTP hop), real gate
                    tasks and simulator transactions; resume = new listener process spawned -> the simulator
                    shows every pending transaction subscribed again (polled every 0.1 s); a sample of
                    the pending actions is approved at the release rate while the others stay pending."""


def table(items: list[Figure]) -> str:
    """The figures as a plain-text table."""
    rows = [("figure", "value", "target", "result")]
    for item in items:
        result = "" if item.passed is None else ("PASS" if item.passed else "FAIL")
        rows.append((item.label, item.shown(), item.target, result))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n\n" + MEASURED


def write_json(path: Path, items: list[Figure], results: Results, meta: dict[str, Any]) -> None:
    """Write the figures, the run's settings and sample summaries as JSON."""
    summary: dict[str, Any] = {"baseline_latency_ms": _summary(results.baseline_latency)}
    if results.release is not None:
        summary["release_latency_ms"] = _summary(results.release.latency)
        summary["release_listener_ms"] = _summary(results.release.listener)
        summary["release_queue_ms"] = _summary(results.release.queue)
    if results.gated is not None and results.baseline_chain is not None:
        summary["cpu_ms_per_item"] = {"chain": results.baseline_chain.cpu_ms, "gated": results.gated.cpu_ms}
    if results.allow is not None:
        summary["allow_latency_ms"] = _summary(results.allow)
    if results.scale is not None:
        summary["scale_latency_ms"] = _summary(results.scale.release.latency)
        summary["scale"] = {
            "peak_rss_mb_learning": results.scale.peak_rss_mb_learning,
            "peak_rss_mb_resumed": results.scale.peak_rss_mb_resumed,
        }
    document = {
        "meta": meta,
        "figures": [asdict(item) for item in items],
        "passed": all(item.passed for item in items if item.passed is not None),
        "samples": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "min": ms(min(values)),
        "p50": ms(percentile(values, 50)),
        "p90": ms(percentile(values, 90)),
        "p95": ms(percentile(values, 95)),
        "p99": ms(percentile(values, 99)),
        "max": ms(max(values)),
    }
