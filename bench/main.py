"""Command line of the benchmark: ``python -m bench [--quick] [--output FILE] ...``.

Exit status: 0 when the run completed (targets met or not; ``--fail-on-miss`` makes a
missed target exit 1), 2 for bad arguments, 1 when the run itself failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bench.deployment import database, deployment
from bench.report import Results, figures, table, write_json
from store.engine import normalise_url

PHASES = ("release", "allow", "throughput", "scale")


@dataclass(frozen=True)
class Counts:
    """How much each phase does, and how fast."""

    baseline: int  # plain Celery no-op tasks
    baseline_rate: float  # ... sent per second
    approvals: int  # release: measured approvals
    pending: int  # release: actions kept pending meanwhile
    rate: float  # release and scale: approvals per second
    allow: int  # allow path: allowed actions
    allow_rate: float  # ... submitted per second
    throughput: int  # gated actions, and plain chains
    concurrency: int  # throughput: parallel REST submitters
    scale_pending: int  # scale: pending approvals held by one listener
    scale_approvals: int  # scale: how many of them are approved (measured)
    warmup: int  # unmeasured items before each measured series


#: The issue's minimums (>= 1,000 approvals at 100 pending; 10,000 pending in one listener),
#: sized to finish in about ten minutes on a 2-core machine.
FULL = Counts(
    baseline=1000,
    baseline_rate=50,
    approvals=1000,
    pending=100,
    rate=10,
    allow=300,
    allow_rate=20,
    throughput=500,
    concurrency=8,
    scale_pending=10_000,
    scale_approvals=500,
    warmup=20,
)
#: Small counts that keep every phase working (the test suite runs this, in about a minute).
QUICK = Counts(
    baseline=100,
    baseline_rate=50,
    approvals=40,
    pending=10,
    rate=20,
    allow=20,
    allow_rate=20,
    throughput=40,
    concurrency=4,
    scale_pending=200,
    scale_approvals=40,
    warmup=5,
)
HELP = {
    "baseline": "plain Celery no-op tasks (latency baseline)",
    "baseline_rate": "plain Celery no-op tasks sent per second",
    "approvals": "release: measured approvals",
    "pending": "release: actions kept pending while they are approved",
    "rate": "release and scale: approvals per second",
    "allow": "allow path: allowed actions",
    "allow_rate": "allow path: REST submissions per second",
    "throughput": "throughput: gated actions, and as many plain two-task chains",
    "concurrency": "throughput: parallel REST submitters",
    "scale_pending": "scale: pending approvals held by one listener",
    "scale_approvals": "scale: how many of them are approved and measured (the rest stay pending)",
    "warmup": "unmeasured items before each measured series",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mfa-gate on real processes beside plain Celery in the same run: release latency, "
        "allow-path overhead, throughput and 10,000 pending approvals. Prints a table (each figure beside its "
        "target, PASS/FAIL) and writes JSON. See bench/__init__.py for what each figure measures.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, about a minute (the test suite's run)")
    parser.add_argument(
        "--database",
        default="sqlite",
        type=_database_choice,
        help="'sqlite' (default: a file in the work dir), 'postgres' (a fresh database on the server of "
        "$MFA_GATE_TEST_PG, dropped afterwards) or a database URL",
    )
    parser.add_argument("--output", type=Path, help="JSON results file (default: WORKDIR/results.json)")
    parser.add_argument("--workdir", type=Path, help="logs, Redis and SQLite files (default: a new temp dir)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all; the plain Celery "
        "no-op latency always runs)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles of the deployment's processes during each phase into DIR (needs py-spy; "
        "profiling costs CPU, so do not quote that run's figures)",
    )
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a figure misses its target")
    counts = parser.add_argument_group("counts and rates (defaults: full / --quick)")
    for item in fields(Counts):
        full, quick = getattr(FULL, item.name), getattr(QUICK, item.name)
        counts.add_argument(
            f"--{item.name.replace('_', '-')}",
            type=float if item.type in (float, "float") else int,
            metavar="N",
            help=f"{HELP[item.name]} ({full:g} / {quick:g})",
        )
    return parser


def _database_choice(value: str) -> str:
    """``--database``: 'sqlite', 'postgres', or a SQLite or PostgreSQL URL; anything else is refused by name."""
    if value in ("sqlite", "postgres"):
        return value
    try:
        backend = make_url(normalise_url(value)).get_backend_name()
    except ArgumentError:
        backend = None
    if backend not in ("sqlite", "postgresql"):
        raise argparse.ArgumentTypeError(f"{value!r} is not 'sqlite', 'postgres' or a sqlite:/// or postgresql:// URL")
    return value


def _counts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Counts:
    """The preset (full or quick), with every count given on the command line taking precedence."""
    preset = asdict(QUICK if args.quick else FULL)
    for name in preset:
        given = getattr(args, name)
        if given is not None:
            if given <= 0 and name != "warmup":
                parser.error(f"--{name.replace('_', '-')} must be positive")
            preset[name] = given
    return Counts(**preset)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    counts = _counts(args, parser)
    phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; choose among {', '.join(PHASES)}")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mfa-gate-bench-"))).resolve()
    output = args.output or workdir / "results.json"
    began = time.time()
    log(f"mfa-gate benchmark ({'quick' if args.quick else 'full'}): work dir {workdir}")
    with database(args.database, workdir) as database_url:
        try:
            results = run(workdir, database_url, counts, phases, args.profile)
        except (RuntimeError, TimeoutError) as exc:
            log(f"benchmark failed: {exc}\nlogs: {workdir / 'deploy' / 'run' / 'logs'}")
            return 1
    items = figures(results)
    meta = {
        "mode": "quick" if args.quick else "full",
        "database": args.database if args.database in ("sqlite", "postgres") else "url",
        "counts": asdict(counts),
        "phases": phases,
        "profiled": args.profile is not None,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": began,
        "seconds": round(time.time() - began, 1),
        "workdir": str(workdir),
    }
    print(table(items), flush=True)
    write_json(output, items, results, meta)
    log(f"results: {output} ({meta['seconds']}s)")
    missed = [item for item in items if item.passed is False]
    return 1 if missed and args.fail_on_miss else 0


def run(workdir: Path, database_url: str, counts: Counts, phases: list[str], profile: Path | None) -> Results:
    """Start the deployment, run the phases in order, stop everything."""
    with deployment(workdir / "deploy", database_url=database_url) as running:
        # Imported here: mfa-gate's task modules read the deployment's settings at import.
        from bench import measure
        from bench.probes import StoreReader
        from bench.profiles import Profiler

        profiler = Profiler(profile, running)
        reader = StoreReader(database_url)
        submitter = measure.RestSubmitter(running)
        try:
            measure.prime(reader, submitter)
            log(f"plain Celery: {counts.baseline} no-op tasks at {counts.baseline_rate:g}/s")
            results = Results(
                baseline_latency=measure.baseline_latency(
                    running, count=counts.baseline, rate=counts.baseline_rate, warmup=counts.warmup
                )
            )
            if "release" in phases:
                log(f"release: {counts.approvals} approvals at {counts.rate:g}/s, {counts.pending} pending")
                with profiler.phase("release"):
                    results.release = measure.release_latency(
                        running,
                        reader,
                        submitter,
                        approvals=counts.approvals,
                        pending=counts.pending,
                        rate=counts.rate,
                        warmup=counts.warmup,
                    )
            if "allow" in phases:
                log(f"allow path: {counts.allow} allowed actions at {counts.allow_rate:g}/s")
                with profiler.phase("allow"):
                    results.allow = measure.allow_path(
                        reader, submitter, count=counts.allow, rate=counts.allow_rate, warmup=counts.warmup
                    )
            if "throughput" in phases:
                log(f"throughput: {counts.throughput} plain chains, then {counts.throughput} gated actions")
                results.baseline_chain = measure.chain_rate(running, count=counts.throughput, warmup=counts.warmup)
                with profiler.phase("throughput"):
                    results.gated = measure.gated_rate(
                        running,
                        reader,
                        submitter,
                        count=counts.throughput,
                        concurrency=counts.concurrency,
                        warmup=counts.warmup,
                    )
            if "scale" in phases:
                log(f"scale: {counts.scale_pending} pending approvals in one listener")
                results.scale = measure.scale(
                    running,
                    reader,
                    pending=counts.scale_pending,
                    approvals=counts.scale_approvals,
                    rate=counts.rate,
                    create_concurrency=4,
                    log=log,
                    stage=lambda name: profiler.phase(f"scale-{name}"),
                )
            return results
        finally:
            submitter.close()
            reader.dispose()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
