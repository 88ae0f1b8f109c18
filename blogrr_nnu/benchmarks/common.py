"""What the benchmark commands share: fresh child processes, peak memory, the machine, tables, JSON.

Peak memory is the ``ru_maxrss`` of a process, which only ever grows: measured in a long-lived
process it would hold the largest stage seen so far. So every measured stage runs in its own fresh
process (spawned, not forked, so it inherits no memory of the parent), and a child that only does
the same imports gives the baseline that the stage's increment is read against.
"""
from __future__ import annotations

import importlib
import logging
import math
import multiprocessing
import os
import platform
import resource
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from blogrr_nnu.image_io import atomic_write
from blogrr_nnu.nnunet_output import prints_as_log

PROG_PREFIX = "python -m blogrr_nnu.benchmarks."


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _importable(fn: Callable) -> Callable:
    """The same function, reachable by a spawned child.

    A module run as ``python -m`` is ``__main__`` in the parent; a spawned child cannot unpickle
    ``__main__.fn`` reliably, so the function is looked up again under the module's real name.
    """
    if fn.__module__ == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None:
            return getattr(importlib.import_module(spec.name), fn.__name__)
    return fn


def _child(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, int]:
    # nnU-Net prints banners (device, citation, log lines) to stdout: keep the parent's stdout for the tables.
    with prints_as_log(logging.getLogger(__name__)):
        result = fn(*args, **kwargs)
    return result, peak_rss_kib()


def run_in_child(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` in a fresh spawned process.

    Returns:
        ``(fn's result, the child's peak RSS in KiB)``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, _importable(fn), args, kwargs).result()


def synchronize(device) -> None:
    """Wait for a CUDA device's queued work (it runs asynchronously) before a clock is read; no-op elsewhere."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def child_info() -> dict:
    """What only a process that imported torch knows (call it in a child)."""
    import torch

    return {"torch_threads": int(torch.get_num_threads())}


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> float | None:
    """1-minute load average (None where the OS has none); read it before measuring."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def machine_info(torch_threads: int | None, load_before: float | None) -> dict:
    """The machine and software a result belongs to.

    Args:
        torch_threads: as a child process reported it.
        load_before: :func:`load_average` before the first measurement; near or above the core count,
            other work competed for the cores and the timings are not worth comparing.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "torch_threads": torch_threads,
            "load_average_before": load_before,
            "torch": _version("torch"), "nnunetv2": _version("nnunetv2"), "blogrr_nnu": _version("blogrr-nnu"),
            "python": platform.python_version(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The exact command line, as it can be pasted again."""
    args = list(sys.argv[1:] if argv is None else argv)
    return PROG_PREFIX + name + (" " + shlex.join(args) if args else "")


def stats(values: Sequence[float]) -> dict:
    """``{"mean", "min", "max", "n"}`` of a non-empty sequence."""
    vals = [float(v) for v in values]
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def mib(kib: float | None) -> str:
    """KiB -> MiB, as table text."""
    return "-" if kib is None else f"{kib / 1024:.0f}"


def sec(value: float | None, digits: int = 3) -> str:
    """Seconds as table text."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict:
    """One table of a report (cells are shown with ``str``)."""
    return {"title": title, "headers": list(headers), "rows": [[str(c) for c in r] for r in rows]}


def render_tables(ts: Sequence[dict]) -> str:
    """Markdown of :func:`table` dicts, each under a ``###`` heading (the one table renderer of the benchmarks)."""
    lines = []
    for t in ts:
        lines += ["", f"### {t['title']}", "", "| " + " | ".join(t["headers"]) + " |",
                  "|" + "|".join("---" for _ in t["headers"]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    return "\n".join(lines)


def render(name: str, command: str, machine: dict, tables: Sequence[dict], notes: Sequence[str]) -> str:
    """The Markdown report: title, command, machine, tables, notes."""
    m = machine
    line = (f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch threads "
            f"{m['torch_threads']}, torch {m['torch']}, nnunetv2 {m['nnunetv2']}, blogrr-nnu {m['blogrr_nnu']}, "
            f"Python {m['python']}")
    if m["omp_num_threads"]:
        line += f", OMP_NUM_THREADS={m['omp_num_threads']}"
    load = m["load_average_before"]
    if load is not None:
        line += f"; load average before the run {load:.2f}"
        if load >= 0.5 * m["usable_cores"]:  # threads of ours and others' share cores: spikes of several x
            line += " (other work competed for the cores: timings are noisy)"
    lines = [f"## {name}", "", f"command: `{command}`", "", line]
    if tables:
        lines.append(render_tables(tables))
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars Python numbers, NaN and infinities null (strict JSON has neither)."""
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def emit(name: str, command: str, machine: dict, tables: Sequence[dict], notes: Sequence[str], results: dict,
         output: str | None) -> None:
    """Print the report and, with ``output``, write the same (plus the raw numbers) as JSON, atomically."""
    import json

    print(render(name, command, machine, tables, notes))
    if output:
        payload = {"benchmark": name, "command": command, "machine": machine, "tables": list(tables),
                   "notes": list(notes), "results": results}
        text = json.dumps(_plain(payload), indent=1, allow_nan=False, default=str)
        atomic_write(output, lambda tmp: Path(tmp).write_text(text))
        print(f"\nwrote {output}")
