"""Figures every benchmark prints the same way: percentiles, rates, resident memory."""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, PostgreSQL's
    percentile_cont); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_line(label: str, seconds: Sequence[float]) -> str:
    """'label: p50 1.2 ms · p95 3.4 ms · p99 5.6 ms (n=…)' from values in seconds."""
    ms = [s * 1000 for s in seconds]
    return latency_line_ms(
        label, percentile(ms, 0.5), percentile(ms, 0.95), percentile(ms, 0.99), len(ms)
    )


def latency_line_ms(label: str, p50: float, p95: float, p99: float, n: int) -> str:
    """The same line from percentiles already computed (by wrk, say), in milliseconds."""
    return f"{label}: p50 {p50:.1f} ms · p95 {p95:.1f} ms · p99 {p99:.1f} ms (n={n})"


def _status_mib(field: str, pid: int | None) -> float | None:
    """A memory line of /proc/<pid>/status ("VmRSS", "VmHWM") in MiB; None without /proc."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib(pid: int | None = None) -> float:
    """Resident memory now (VmRSS), in MiB; 0.0 where /proc is not there."""
    return _status_mib("VmRSS", pid) or 0.0


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a process, in MiB; this process's ru_maxrss where
    /proc is not there."""
    peak = _status_mib("VmHWM", pid)
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The command name (field 2) may hold spaces: count fields after its ")".
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Every descendant of a process (children, their children, …), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
