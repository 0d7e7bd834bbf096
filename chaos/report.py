"""The verdict of a chaos run: the store compared with what the target received.

The target counts requests per ``Idempotency-Key``, which the worker sets to the action
id, so for every action we know how often it really ran, whatever the store says.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from store import ActionStatus, Release
from store.transitions import REFUSED

if TYPE_CHECKING:
    from chaos.suite import ChaosRun

S = ActionStatus

# The figures that must be zero, in the order the table shows them.
MUST_BE_ZERO = ("lost", "executed_more_than_once", "executed_without_release", "refused_but_executed")

LABELS = {
    "submitted": "actions submitted",
    "acknowledged": "  of which the API acknowledged",
    "executed": "executed (reached the target)",
    "lost": "released, neither executed nor ambiguous (lost)",
    "executed_more_than_once": "executed more than once",
    "executed_without_release": "executed without a release",
    "refused_but_executed": "rejected/expired/denied/blocked/cancelled that executed",
    "ambiguous": "ambiguous (worker stopped mid-run)",
    "ambiguous_executed": "  of which reached the target",
    "succeeded_not_executed": "succeeded in the store, never reached the target",
    "failed_but_executed": "failed in the store, yet reached the target",
    "unsettled": "not settled at the end",
    "unknown_hits": "target requests with no known action",
    "unexpected_exits": "processes that died on their own (restarted)",
}


@dataclass
class ChaosResult:
    """Everything a run measured; ``passed`` when each MUST_BE_ZERO figure is 0 and all settled."""

    figures: dict[str, int]
    by_status: dict[str, int]
    by_plan: dict[str, dict[str, int]]
    faults: list[dict[str, Any]]
    decisions: dict[str, dict[str, int]]
    timings: dict[str, float | None]
    audit_chain_ok: bool | None
    errors: list[str]
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None

    @property
    def settled(self) -> bool:
        return self.timings.get("settle_seconds") is not None and self.figures.get("unsettled", 0) == 0

    @property
    def failures(self) -> list[str]:
        """Why the run failed (empty when it passed)."""
        found = [f"{name} = {self.figures[name]}" for name in MUST_BE_ZERO if self.figures.get(name, 0)]
        if not self.settled:
            found.append(f"{self.figures.get('unsettled', 0)} action(s) did not settle in time")
        if self.figures.get("late_hits", 0):
            found.append(f"{self.figures['late_hits']} request(s) reached the target after everything settled")
        return found

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "figures": self.figures,
            "by_status": self.by_status,
            "by_plan": self.by_plan,
            "faults": self.faults,
            "decisions": self.decisions,
            "timings": self.timings,
            "audit_chain_ok": self.audit_chain_ok,
            "errors": self.errors,
            "unexpected_exits": self.unexpected_exits,
            "examples": self.examples,
            "config": self.config,
            "workdir": self.workdir,
        }


def figures(run: ChaosRun, *, settle_seconds: float | None, late_hits: int) -> ChaosResult:
    """Compare the store with the target's counts; see MUST_BE_ZERO."""
    store, target = run.store, run.target
    actions = store.list_actions(limit=10_000_000)
    with store.session() as session:
        released = set(session.exec(select(Release.action_id)).all())
    hits = dict(target.received)
    plan_of = {s.key: s.plan for s in run.submissions}
    found: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    by_plan: dict[str, Counter[str]] = {}

    def note(name: str, action_id: str) -> None:
        found[name] += 1
        examples.setdefault(name, [])
        if len(examples[name]) < 5:
            examples[name].append(action_id)

    known = {a.id for a in actions}
    for action in actions:
        count = hits.get(action.id, 0)
        status = ActionStatus(action.status)
        found["submitted"] += 1
        by_plan.setdefault(plan_of.get(action.idempotency_key or "", "other"), Counter())[str(status)] += 1
        if count:
            found["executed"] += 1
        if count > 1:
            note("executed_more_than_once", action.id)
        if count and action.id not in released:
            note("executed_without_release", action.id)
        if count and status in REFUSED:
            note("refused_but_executed", action.id)
        if action.id in released and not count and status != S.AMBIGUOUS:
            note("lost", action.id)
        if status == S.AMBIGUOUS:
            note("ambiguous", action.id)
            if count:
                found["ambiguous_executed"] += 1
        if status == S.SUCCEEDED and not count:
            note("succeeded_not_executed", action.id)
        if status == S.FAILED and count:
            note("failed_but_executed", action.id)
        if status in (S.SUBMITTED, S.AWAITING_APPROVAL, S.QUEUED, S.EXECUTING):
            note("unsettled", action.id)
    unknown = sum(count for key, count in hits.items() if key not in known)
    found["unknown_hits"] = unknown
    found["executed_without_release"] += unknown
    found["acknowledged"] = sum(1 for s in run.submissions if s.action_id is not None)
    found["late_hits"] = late_hits
    found["unexpected_exits"] = len(run.unexpected_exits)
    figures_out = {name: int(found.get(name, 0)) for name in (*LABELS, "late_hits")}
    try:
        audit_ok: bool | None = bool(store.verify_audit().ok)
    except Exception:  # reported as unknown rather than ending the run without a verdict
        audit_ok = None
    return ChaosResult(
        figures=figures_out,
        by_status=dict(sorted(store.count_by_status().items())),
        by_plan={plan: dict(sorted(counts.items())) for plan, counts in sorted(by_plan.items())},
        faults=[event.as_json() for event in run.events],
        decisions={"done": dict(run.decisions.done), "refused": dict(run.decisions.refused)},
        timings={
            "settle_seconds": None if settle_seconds is None else round(settle_seconds, 1),
            "run_seconds": round(run.clock(), 1),
        },
        audit_chain_ok=audit_ok,
        errors=list(run.errors) + [f"submission {s.key}: {s.error}" for s in run.submissions if s.action_id is None],
        examples=examples,
        unexpected_exits=list(run.unexpected_exits),
    )


def format_table(result: ChaosResult) -> str:
    """The result as a plain-text table, with the verdict last."""
    rows = [(LABELS[name], str(result.figures.get(name, 0))) for name in LABELS]
    settle = result.timings.get("settle_seconds")
    rows.append(("time until everything settled (after the last submission and fault)",
                 "never" if settle is None else f"{settle} s"))
    rows.append(("total run time", f"{result.timings.get('total_seconds')} s"))
    rows.append(("audit chain verifies", {True: "yes", False: "NO", None: "unknown"}[result.audit_chain_ok]))
    width = max(len(label) for label, _ in rows)
    lines = ["", "mfa-gate chaos suite", "-" * (width + 12)]
    lines += [f"{label:<{width}}  {value:>8}" for label, value in rows]
    lines.append("-" * (width + 12))
    lines.append("statuses: " + ", ".join(f"{k}={v}" for k, v in result.by_status.items()))
    kinds = Counter(str(event["fault"]).split(":")[0] for event in result.faults)
    lines.append("faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    failed_faults = [event for event in result.faults if event.get("error")]
    if failed_faults:
        lines.append(f"faults that could not be injected: {len(failed_faults)}")
    if result.errors:
        lines.append(f"errors: {len(result.errors)} (first: {result.errors[0]})")
    lines.append("PASSED" if result.passed else "FAILED: " + "; ".join(result.failures))
    return "\n".join(lines)
