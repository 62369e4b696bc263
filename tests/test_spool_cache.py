"""The SQLite page cache per connection: the engine's is large, a light connection's
(the API's reads, tracking, webhooks, metrics, the CLI) stays small however large the
spool it reads, so a service's memory does not grow with its spool once per connection.

Measured in a fresh process (the resident set before and after one pass over the whole
spool), because what a cache keeps is memory the process holds, not a setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from ferrymail.spool import NewRecipient, SqliteSpool
from ferrymail.wire import Recipient

RECIPIENTS = 120_000
MIB = 1 << 20

# One pass over every row of the campaign (the table's pages, not only an index), then
# how much the resident set grew; malloc_trim first, so that only memory in use counts.
READ_ALL = """
import ctypes, os, sys
from ferrymail.spool import open_spool

libc = ctypes.CDLL("libc.so.6")

def resident():
    libc.malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

spool = open_spool(sys.argv[1], light=sys.argv[2] == "light")
spool.counts()
before = resident()
seen = sum(1 for _ in spool.iter_recipients("c1"))
grown = resident() - before
spool.close()
print(seen, grown)
"""


@pytest.fixture(scope="module")
def large_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spool file of some 60 MB: larger than the engine's cache."""
    path = tmp_path_factory.mktemp("cache") / "spool.db"
    encoder = msgspec.msgpack.Encoder()
    filler = "x" * 300
    with SqliteSpool(path) as spool:
        spool.put_campaign("c1", b"spec")
        for start in range(0, RECIPIENTS, 10_000):
            rows = []
            for i in range(start, start + 10_000):
                address = f"user{i}@example{i % 50}.test"
                blob = encoder.encode(Recipient(address, {"note": filler}, None))
                rows.append(
                    NewRecipient(
                        blob, address, address.split("@")[1], address, "queued", None, None, None
                    )
                )
            spool.insert("c1", rows)
    assert path.stat().st_size > 40 * MIB
    return path


def grown_by_reading(path: Path, kind: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(path), kind],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen, grown = map(int, done.stdout.split())
    assert seen == RECIPIENTS
    return grown


def test_a_light_connection_keeps_little_of_a_large_spool(large_spool: Path) -> None:
    assert grown_by_reading(large_spool, "light") < 6 * MIB


def test_the_engines_connection_keeps_up_to_its_larger_cache(large_spool: Path) -> None:
    grown = grown_by_reading(large_spool, "engine")
    assert 20 * MIB < grown < 40 * MIB
