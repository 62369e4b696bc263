"""Lease owners: which one is a process of this host that is no longer running."""

from __future__ import annotations

import os
import socket


def dead_here(owner: str) -> bool:
    """Whether `owner` (the engine's "host:pid:random") names a process of this host
    that has ended: its leases need not run out before its recipients are taken back.

    Any doubt is "no": another host (its pids mean nothing here), an owner written
    another way, a pid that exists (even another user's, or reused by an unrelated
    process: its leases then end in their time, as before)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname() or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process its parent has not waited for yet still has a pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # pid (comm) state …: comm may hold spaces and parentheses, the state follows
            # the last ")".
            return f.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return False
