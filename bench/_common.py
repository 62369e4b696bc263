"""Helpers the benchmarks share: the markdown table, the machine line, CPU and memory from /proc."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence


def markdown_table(head: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A markdown table padded to read as text: the first column left-aligned, the
    others (numbers) right-aligned."""
    widths = [max(len(line[i]) for line in [head, *lines]) for i in range(len(head))]

    def fmt(line: Sequence[str]) -> str:
        cells = [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        return "| " + " | ".join([line[0].ljust(widths[0]), *cells]) + " |"

    rule = "|".join(["", "-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:]), ""])
    return "\n".join([fmt(head), rule, *map(fmt, lines)])


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("Intel(R) Xeon(R) ..."), else platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def debian_version(package: str) -> str:
    """An installed Debian package's version, "?" if unknown."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    return done.stdout or "?"


def process_cpu(pid: int) -> float:
    """A running process's user + system CPU seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime, fields 14 and 15 of proc(5), counted after "pid (comm)".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(parent: int) -> float:
    """CPU seconds of a process and its children, live and ended (a PostgreSQL server:
    the postmaster, its backends, walwriter, checkpointer, autovacuum; the ended ones
    through the postmaster's cutime and cstime, once it has reaped them)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == parent:
            total += sum(int(x) for x in fields[11:15]) / tick
        elif ppid == parent:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def high_water_kb(pid: int) -> int:
    """A running process's peak RSS (VmHWM) in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot, every core together
    (/proc/stat: user, nice, system, irq, softirq and steal; not idle or iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
