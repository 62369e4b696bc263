"""Keeps a long-running command's C heap from holding on to memory it has freed (glibc).

`ferrymail serve` and `ferrymail run` live for weeks. Their C allocations (SQLite, the
interpreter's large objects, uvloop, httptools) go through glibc's malloc, which gives
each new thread an arena of its own (up to eight per core) and returns an arena's free
pages to the OS only from its top. A soak of serve showed it: malloc's in-use bytes
(mallinfo2) flat at 12 to 13 MiB over 5 minutes while its arenas grew from 14 to 18 MiB,
the growth all free chunks spread over 11 to 13 arenas, and the Python heap, SQLite and
the Rust core (mimalloc) flat. Three glibc knobs bound it:

- at start, at most `ARENAS` arenas: the threads are few and mostly under the GIL, so
  more arenas buy no parallelism, only more places for free memory to sit;
- at start, a fixed `MMAP_THRESHOLD`: left to itself, glibc raises it to the size of
  any mmap'd block freed (up to 32 MiB), and from then on puts the webhook batches and
  request bodies of that size in the arenas, between longer-lived blocks;
- every `TRIM_EVERY` seconds, `malloc_trim(0)`, which hands back the free pages inside
  every arena, not just at its top (3 ms for an 80 MB heap with one block in 50 kept,
  here, and serve's is under 20 MB).

On other C libraries (musl, macOS) they are no-ops.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools

ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept
TRIM_EVERY = 60.0
_M_MMAP_THRESHOLD = -3  # malloc.h
_M_ARENA_MAX = -8


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc's, not musl's or macOS's
    except (OSError, AttributeError):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def configure(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Caps the arenas threads started from now on may create, and fixes the size from
    which a block is mmap'd; True if glibc took both.

    Call it first thing: a thread keeps the arena it got.
    """
    libc = _glibc()
    return (
        libc is not None
        and libc.mallopt(_M_ARENA_MAX, arenas) == 1
        and libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    )


def trim() -> bool:
    """Returns the heap's free pages to the OS; True if there were any to return."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


async def trim_every(seconds: float = TRIM_EVERY) -> None:
    """Trims the heap every `seconds` until cancelled."""
    if _glibc() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        trim()
