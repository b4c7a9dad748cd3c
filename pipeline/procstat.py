"""CPU seconds and resident memory of process groups and of the machine, read from /proc
(Linux only; elsewhere they read as zero).

A benchmark names each process it started (broker, each stage, the worker) by the id of its
process group, so forked children (Celery's pool, a task's command) count with their parent;
the sandbox's `kubectl top` reads its containers' groups the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_bytes: int


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:  # gone, or not Linux
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the state on (the name may hold spaces)


def group_usage(pgids: dict[str, int]) -> dict[str, Usage]:
    """CPU (user + system, children reaped included) and RSS summed per named process group."""
    cpu = dict.fromkeys(pgids, 0.0)
    rss = dict.fromkeys(pgids, 0)
    names = {pgid: name for name, pgid in pgids.items()}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit() or (fields := _stat_fields(entry.name)) is None:
            continue
        name = names.get(int(fields[2]))  # field 5, pgrp
        if name is None:
            continue
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        cpu[name] += (utime + stime + cutime + cstime) / TICKS
        rss[name] += int(fields[21]) * PAGE
    return {name: Usage(cpu[name], rss[name]) for name in pgids}


def own_children(marker: str) -> list[int]:
    """Pids of this process's children whose command line contains `marker`."""
    found = []
    me = os.getpid()
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit() or (fields := _stat_fields(entry.name)) is None:
            continue
        if int(fields[1]) != me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def process_usage(pid: int) -> Usage:
    """CPU and RSS of one process (its threads included), e.g. the benchmark's own."""
    fields = _stat_fields(str(pid))
    if fields is None:
        return Usage(0.0, 0)
    return Usage(sum(int(v) for v in fields[11:13]) / TICKS, int(fields[21]) * PAGE)


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting) since boot."""
    try:
        first = (PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    guests = sum(ticks[8:10])  # already counted in user and nice
    return (sum(ticks) - idle - guests) / TICKS


def machine_memory_used() -> int:
    """Bytes of memory in use: total less what is available (as `free` reports it)."""
    try:
        lines = (PROC / "meminfo").read_text().splitlines()
    except OSError:
        return 0
    kib = {line.split(":")[0]: int(line.split()[1]) for line in lines if line.endswith("kB")}
    return (kib.get("MemTotal", 0) - kib.get("MemAvailable", 0)) * 1024
