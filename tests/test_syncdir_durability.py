"""How received files are made durable (owsync/syncdir.py): one syncfs(2) per file
system for a whole batch where Linux has it, an fsync per file and directory where
not.  Real files on the test's file system; the calls are counted by wrapping the
real ones, which still run.  The stand-ins: a syncfs that fails with EIO, which
a healthy disk cannot be made to do here, and a renameat2 refused as on a file
system without its flags (jffs2) or a kernel without it, which this one is not."""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest

from owsync.io import syncdir
from owsync.io.syncdir import SyncDir

pytestmark = pytest.mark.skipif(not syncdir.have_syncfs(), reason="needs Linux's syncfs(2)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def counted(monkeypatch):
    calls = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = syncdir._syncfs, os.fsync

    def syncfs(fd):
        calls["syncfs"] += 1
        real_syncfs(fd)

    def fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(syncdir, "_syncfs", syncfs)
    monkeypatch.setattr(syncdir.os, "fsync", fsync)
    return calls


def stage_many(d: SyncDir, n: int) -> list:
    return [d.stage(f"s{i % 7}/f{i}", b"x%d" % i, 0o640, 1_700_000_000_000 + i, None)
            for i in range(n)]  # fmt: skip


def test_a_batch_holds_no_descriptor_per_file_and_takes_one_syncfs(tmp_path, counted):
    with SyncDir(str(tmp_path)) as d:
        assert d.by_fs and d.batch_files == 1024
        before = open_fds()
        batch = stage_many(d, 1000)
        assert open_fds() - before <= 8  # the root and its 7 subdirectories, no file
        assert counted == {"syncfs": 0, "fsync": 0}
        results = d.commit(batch)
        assert counted == {"syncfs": 1, "fsync": 0}  # one file system, one call
        d.sync_dirs()
        assert counted == {"syncfs": 2, "fsync": 0}
    assert all(not isinstance(r, Exception) for r in results)
    f = tmp_path / "s3" / "f10"
    assert f.read_bytes() == b"x10" and stat.S_IMODE(f.stat().st_mode) == 0o640
    assert f.stat().st_mtime_ns == (1_700_000_000_000 + 10) * 1_000_000
    assert not [p for p in tmp_path.rglob("*") if syncdir.is_temp_name(p.name)]


def test_without_syncfs_every_file_and_directory_is_fsynced(tmp_path, counted):
    with SyncDir(str(tmp_path)) as d:
        d.by_fs, d.batch_files = False, 64  # what a system without syncfs(2) gets
        batch = stage_many(d, 20)
        d.commit(batch)
        assert counted == {"syncfs": 0, "fsync": 20}
        d.sync_dirs()
        assert counted == {"syncfs": 0, "fsync": 20 + 8}  # the root and 7 subdirectories
    assert (tmp_path / "s0" / "f7").read_bytes() == b"x7"


def test_a_failing_sync_discards_the_whole_batch(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(5, "Input/output error")

    with SyncDir(str(tmp_path)) as d:
        batch = stage_many(d, 10)
        monkeypatch.setattr(syncdir, "_syncfs", broken)
        with pytest.raises(OSError, match="Input/output"):
            d.commit(batch)
    # nothing renamed into place before it was durable, and no temp file left
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("errno_", [errno.EINVAL, errno.ENOSYS])
def test_without_renameat2_a_received_file_still_goes_in_place(tmp_path, monkeypatch, caplog,
                                                               errno_):  # fmt: skip
    """A file system that refuses RENAME_EXCHANGE or RENAME_NOREPLACE (jffs2 has
    no exchange), or a kernel without renameat2: the check and a plain rename,
    as before; said once, not once per file."""
    calls = []

    def refused(fd, src, dst, flags):
        calls.append(flags)
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(syncdir, "_renameat2", refused)
    monkeypatch.setattr(syncdir, "_refused", set())
    caplog.set_level(logging.INFO, logger="owsync")
    (tmp_path / "old").write_bytes(b"old")
    with SyncDir(str(tmp_path)) as d:
        expect = syncdir.signature(os.lstat(tmp_path / "old"))
        for i in range(3):
            d.commit([d.stage(f"new{i}", b"new %d" % i, 0o644, 1_700_000_000_000, None)])
        (res,) = d.commit([d.stage("old", b"replaced", 0o644, 1_700_000_000_000, expect)])
    assert not isinstance(res, Exception)
    assert (tmp_path / "old").read_bytes() == b"replaced"
    assert (tmp_path / "new2").read_bytes() == b"new 2"
    assert calls == [syncdir.RENAME_NOREPLACE, syncdir.RENAME_EXCHANGE]
    said = [r for r in caplog.records if "renameat2" in r.getMessage()]
    assert len(said) == 2  # once per flag
    assert not [p for p in tmp_path.iterdir() if syncdir.is_temp_name(p.name)]
