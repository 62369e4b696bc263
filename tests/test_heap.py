"""The C heap of serve, run and inbound: freed memory goes back to the OS (glibc's malloc_trim)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A fresh interpreter fills its heap with 80 MB of 4 kB blocks (over pymalloc's 512 bytes,
# so malloc's), keeps one in 50 so that free() cannot give the pages back from the top,
# and prints its RSS after the free and after a trim.
_FRAGMENT_THEN_TRIM = textwrap.dedent(
    """
    from ferrymail.cli import heap

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    blocks = [bytes(4000) for _ in range(20_000)]
    kept = blocks[::50]
    del blocks
    freed = rss_kib()
    returned = heap.trim()
    print(freed, rss_kib(), returned)
    """
)


def test_trim_returns_the_free_pages_that_free_keeps() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_THEN_TRIM], capture_output=True, text=True, check=True
    ).stdout.split()
    freed, trimmed, returned = int(out[0]), int(out[1]), out[2]
    assert returned == "True"
    assert freed - trimmed > 50_000, f"RSS {freed} KiB after free, {trimmed} KiB after the trim"


# Eight threads, all alive at once, each allocating: glibc gives each an arena unless
# capped. malloc_stats() prints one "Arena N:" block per arena to stderr.
_EIGHT_THREADS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from ferrymail.cli import heap

    if sys.argv[1] == "capped":
        assert heap.configure(arenas=2)
    all_alive = threading.Barrier(8)

    def allocate():
        blocks = [bytes(4000) for _ in range(100)]
        all_alive.wait()

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctypes.CDLL(None).malloc_stats()
    """
)


def _arenas(mode: str) -> int:
    stderr = subprocess.run(
        [sys.executable, "-c", _EIGHT_THREADS, mode], capture_output=True, text=True, check=True
    ).stderr
    return sum(line.startswith("Arena ") for line in stderr.splitlines())


def test_configure_caps_the_arenas_threads_get() -> None:
    assert _arenas("capped") == 2
    assert _arenas("uncapped") > 2  # the cap, not the machine, made it 2
