"""A first sync's received files made durable in one syncfs(2), replaced ones in batches.

Real `owsync listen` and `connect` processes; the receiving node's crash points
traced (OWSYNC_CRASH_TRACE, owsync/io/faults.py) give the order of its
file-system calls.  Files new to a node wait for one syncfs for all of them
(up to owsync.service.replica.NEW_BATCH_FILES): each syncfs is a journal
commit and a cache flush.  Files that replace one keep batches of 1,024.
Either way nothing is renamed into place before a syncfs made its content
durable, and the database is saved after a syncfs made the renames durable.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Node, armed, traced

from owsync.io import syncdir

pytestmark = pytest.mark.skipif(not syncdir.have_syncfs(), reason="needs Linux's syncfs(2)")

N = 2100  # over two batches of 1,024 replaced files


def check_order(hits: list[tuple[str, int]], rename: str) -> list[int]:
    """Renames per batch, checking that each batch's renames follow its syncfs,
    that every temp file of a batch was written before it, and that the
    database is saved after the renames were made durable."""
    names = [name for name, _ in hits]
    per_batch: list[int] = []
    staged = 0  # temp files written, not yet made durable
    durable = 0  # made durable, not yet renamed
    for name in names:
        if name == "syncdir.create.temp":
            staged += 1
        elif name == "syncdir.syncfs.batch":
            durable, staged = durable + staged, 0
            per_batch.append(0)
        elif name == rename:
            assert durable > 0, "renamed into place before a syncfs made it durable"
            durable -= 1
            per_batch[-1] += 1
    dirs = len(names) - 1 - names[::-1].index("syncdir.syncfs.dirs")
    last_rename = len(names) - 1 - names[::-1].index(rename)
    assert last_rename < dirs < names.index("database.rename")
    return per_batch


def write_all_and_sync(a: Node, b: Node, content: bytes, mtime: float, trace: Path) -> list:
    """A writes its N files (``content`` % i), B syncs them, traced: the points B hit."""
    for i in range(N):
        a.write(f"d{i % 10}/f{i}", content % i, mtime)
    b.env = armed(trace=trace)
    a.listen()
    try:
        b.sync_ok(a)
    finally:
        a.stop()
    return traced(trace)


def test_first_sync_one_syncfs_for_new_files_batches_for_replaced(tmp_path):
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    old = time.time() - 3600
    hits = write_all_and_sync(a, b, b"first %d\n", old, tmp_path / "first.trace")
    assert b.files() == a.files() and len(b.files()) == N
    assert check_order(hits, "syncdir.rename.noreplace") == [N]  # one syncfs

    # every file replaced on A
    hits = write_all_and_sync(a, b, b"second %d\n", old + 60, tmp_path / "second.trace")
    assert b.files() == a.files() and set(b.files().values()) == {
        b"second %d\n" % i for i in range(N)
    }
    assert check_order(hits, "syncdir.rename.exchange") == [1024, 1024, N - 2048]
