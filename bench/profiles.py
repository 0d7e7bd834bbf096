"""Optional py-spy profiles of mfa-gate's processes, one set per phase (``--profile DIR``).

For each phase, ``py-spy record`` samples the web process, the gate and execute workers
(with their pool processes), the listener and the simulator, 100 times a second, without
pausing them (``--nonblocking``), into ``DIR/<phase>-<process>.txt`` (collapsed stacks:
``frame;frame;... count``). ``DIR/<phase>-summary.txt`` lists, per process, the share of
samples spent inside each function of mfa-gate's own packages. Profiling costs CPU, so
the figures of a profiled run are not the ones to quote.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.deployment import Deployment

#: Process kinds worth profiling (``stack.children`` names, listener-N matched by prefix).
PROFILED = ("web", "worker-gate+maintenance-1", "worker-execute-1", "listener-", "simulator")
#: Packages whose functions the summary reports.
OWN_PACKAGES = ("listener/", "tasks/", "store/", "web/", "rublon/", "simulator/", "policies/", "config/")
SAMPLES_PER_SECOND = 100


def py_spy() -> str | None:
    """The py-spy executable (on PATH or beside this interpreter), or None."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else None


class Profiler:
    """Records py-spy profiles around phases; does nothing when ``folder`` is None.

    Raises (at construction):
        RuntimeError: a folder was given but py-spy is not installed.
    """

    def __init__(self, folder: Path | None, deployment: Deployment) -> None:
        self.folder = folder
        self.deployment = deployment
        self.executable = py_spy() if folder else None
        if folder is not None and self.executable is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Profile the deployment's processes while the block runs."""
        if self.folder is None or self.executable is None:
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        recorders: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for child_name, child in self.deployment.stack.children.items():
            if not child.alive() or not any(child_name.startswith(kind) for kind in PROFILED):
                continue
            output = self.folder / f"{name}-{child_name}.txt"
            argv = [
                self.executable,
                "record",
                "--pid",
                str(child.process.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(SAMPLES_PER_SECOND),
                "--format",
                "raw",
                "--output",
                str(output),
            ]
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            recorders[child_name] = (process, output)
        try:
            yield
        finally:
            for process, _ in recorders.values():
                process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for process, _ in recorders.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(60)
            summary = [summarize(child_name, output) for child_name, (_, output) in recorders.items()]
            (self.folder / f"{name}-summary.txt").write_text("\n".join(summary))


def summarize(label: str, path: Path, *, top: int = 25) -> str:
    """The functions of mfa-gate's own packages by share of samples (inclusive), from a raw py-spy file."""
    if not path.exists():
        return f"== {label}: no profile written\n"
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        seen: set[str] = set()
        for frame in stack.split(";"):
            function, _, where = frame.partition(" (")
            filename = where.rsplit(":", 1)[0]
            if filename.startswith(OWN_PACKAGES):
                key = f"{function} ({filename})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += samples
    lines = [f"== {label}: {total} samples ({total / SAMPLES_PER_SECOND:.1f} s on CPU or waiting for the GIL)"]
    lines += [f"{100 * n / max(total, 1):5.1f}%  {key}" for key, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
