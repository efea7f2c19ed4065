"""Memory and CPU of a process and all its descendants, read from /proc (Linux, no psutil)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def _field_kb(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    """Resident memory of the whole tree (VmRSS summed: shared pages count in each process)."""
    return sum(_field_kb(f"/proc/{p}/status", "VmRSS:") for p in tree(pid)) / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size of the tree (shared pages split between the processes sharing them)."""
    return sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree(pid)) / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by the tree's live processes."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def busy_cores(since: tuple[int, int]) -> float:
    """Cores busy on average (all processes) since `since` (a machine_ticks() reading)."""
    busy, total = machine_ticks()
    return (busy - since[0]) / max(total - since[1], 1) * (os.cpu_count() or 1)
