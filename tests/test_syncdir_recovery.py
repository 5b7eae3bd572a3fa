"""What recovery makes of the temp files a kill leaves (owsync/io/syncdir.py),
in-process on real files: a kill is a BaseException raised at a crash point,
after which nothing of the run happens (its clean-up neither); recovery is a
new SyncDir's remove_stale_temps() on the temp files a scan would list.  The
processes killed with SIGKILL are in tests/test_crash_points.py; here, the
cases a session cannot be steered into: a target name too long to go in a
temp name, a write at the target after the kill, a kill before the exchange."""

from __future__ import annotations

import errno
import os

import pytest

from owsync.io import syncdir
from owsync.io.syncdir import SyncDir

pytestmark = pytest.mark.skipif(not syncdir._have_renameat2(), reason="needs Linux's renameat2(2)")

MTIME = 1_700_000_000_000
LONG = "l" * 240  # a name that leaves no room for the rest of a temp name


class Killed(BaseException):
    pass


@pytest.fixture
def kill_at(monkeypatch):
    """kill_at(point, race=None): the run dies at ``point``, leaving its files
    as they are; ``race``: (a point, a local write made as the run reaches
    it), the same point or one before."""

    def arm(point: str, race=None) -> None:
        def hit(name: str) -> None:
            if race is not None and name == race[0]:
                race[1]()
            if name == point:
                raise Killed(name)

        monkeypatch.setattr(syncdir.faults, "point", hit)
        monkeypatch.setattr(SyncDir, "discard", lambda self, batch: None)

    return arm


def temps(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if syncdir.is_temp_name(p.name))


def recover(root, known=()) -> list[str]:
    with SyncDir(str(root)) as d:
        return d.remove_stale_temps(temps(root), known=known)


def replace_by_rename(path, data: bytes) -> None:
    edit = path.with_name(".edit")
    edit.write_bytes(data)
    edit.rename(path)


def receive(root, name: str) -> None:
    """A received file replacing ``name``, as the scan saw it."""
    with SyncDir(str(root)) as d:
        expect = syncdir.signature(os.lstat(root / name))
        d.commit([d.stage(name, b"received", 0o644, MTIME, expect)])


@pytest.mark.parametrize("name", ["firewall", LONG])
def test_a_local_write_left_aside_by_the_exchange_is_put_back(tmp_path, kill_at, name):
    target = tmp_path / name
    target.write_bytes(b"old")
    kill_at(
        "syncdir.rename.back",
        ("syncdir.rename.exchange", lambda: replace_by_rename(target, b"local")),
    )
    with pytest.raises(Killed):
        receive(tmp_path, name)
    assert target.read_bytes() == b"received" and len(temps(tmp_path)) == 1
    if name == LONG:
        assert "-h" in temps(tmp_path)[0]  # its hash, not its name
    assert recover(tmp_path) == [name]
    assert target.read_bytes() == b"local"
    assert temps(tmp_path) == []


def test_a_write_at_the_target_after_the_kill_supersedes_the_one_left_aside(tmp_path, kill_at):
    target = tmp_path / "firewall"
    target.write_bytes(b"old")
    kill_at(
        "syncdir.rename.back",
        ("syncdir.rename.exchange", lambda: replace_by_rename(target, b"local")),
    )
    with pytest.raises(Killed):
        receive(tmp_path, "firewall")
    replace_by_rename(target, b"written after the kill")
    assert recover(tmp_path) == []
    assert target.read_bytes() == b"written after the kill"
    assert temps(tmp_path) == []


@pytest.mark.parametrize("point", ["syncdir.rename.exchange", "syncdir.unlink.replaced"])
def test_the_staged_file_or_the_replaced_one_is_removed(tmp_path, kill_at, point):
    """Killed before the exchange, a local write made meanwhile at the target
    (or none): the temp file holds the staged file; killed after it, with no
    local write: the file the scan saw.  Either is removed, and what is in
    place stays."""
    target = tmp_path / "firewall"
    target.write_bytes(b"old")
    if point == "syncdir.rename.exchange":
        kill_at(point, (point, lambda: replace_by_rename(target, b"local")))
        want = b"local"
    else:
        kill_at(point)
        want = b"received"
    with pytest.raises(Killed):
        receive(tmp_path, "firewall")
    assert len(temps(tmp_path)) == 1
    assert recover(tmp_path) == []
    assert target.read_bytes() == want
    assert temps(tmp_path) == []


@pytest.mark.parametrize("name", ["dhcp", LONG])
def test_a_local_write_taken_aside_by_a_deletion_is_put_back(tmp_path, kill_at, name):
    target = tmp_path / name
    target.write_bytes(b"old")
    with SyncDir(str(tmp_path)) as d:
        expect = syncdir.signature(os.lstat(target))
        race = ("syncdir.rename.deleted", lambda: replace_by_rename(target, b"local"))
        kill_at("syncdir.rename.undeleted", race)
        with pytest.raises(Killed):
            d.delete(name, expect)
    assert not target.exists() and len(temps(tmp_path)) == 1
    # the target is gone: a hashed name is found among the paths known
    assert recover(tmp_path, known=["other", name]) == [name]
    assert target.read_bytes() == b"local"
    assert temps(tmp_path) == []


def test_a_file_taken_aside_as_the_scan_saw_it_is_deleted(tmp_path, kill_at):
    target = tmp_path / "dhcp"
    target.write_bytes(b"old")
    with SyncDir(str(tmp_path)) as d:
        expect = syncdir.signature(os.lstat(target))
        kill_at("syncdir.unlink.deleted")
        with pytest.raises(Killed):
            d.delete("dhcp", expect)
    assert len(temps(tmp_path)) == 1
    assert recover(tmp_path) == []
    assert not target.exists() and temps(tmp_path) == []


def test_a_swap_back_that_fails_leaves_the_local_write_for_recovery(tmp_path, monkeypatch):
    """The stand-in: renameat2 failing with EIO at the swap back, which a
    healthy disk cannot be made to do here.  The batch is discarded, but not
    the temp file holding the local write: recovery puts it back."""
    target = tmp_path / "firewall"
    target.write_bytes(b"old")
    real, calls = syncdir.renameat2, []

    def failing_back(dfd, src, dst, flags):
        calls.append(flags)
        if flags == syncdir.RENAME_EXCHANGE and len(calls) == 1:
            replace_by_rename(target, b"local")  # raced in just before the exchange
        elif flags == syncdir.RENAME_EXCHANGE:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(dfd, src, dst, flags)

    monkeypatch.setattr(syncdir, "renameat2", failing_back)
    with pytest.raises(OSError):
        receive(tmp_path, "firewall")
    monkeypatch.setattr(syncdir, "renameat2", real)
    assert target.read_bytes() == b"received" and len(temps(tmp_path)) == 1
    assert recover(tmp_path) == ["firewall"]
    assert target.read_bytes() == b"local" and temps(tmp_path) == []


def test_a_file_renamed_away_as_it_lands_is_left_to_the_scan(tmp_path, monkeypatch):
    """A local rename right after a received file goes in place (the churn
    test's race): that file is LocalChanged, not an I/O error that drops the
    batch, and the file after it in the batch still lands."""
    sd = SyncDir(str(tmp_path))
    real = syncdir.renameat2

    def then_renamed(dfd, src, dst, flags):
        real(dfd, src, dst, flags)
        if dst == "a":
            os.rename(tmp_path / "a", tmp_path / "a.moved")  # the admin's mv, at once

    monkeypatch.setattr(syncdir, "renameat2", then_renamed)
    batch = [sd.stage(name, b"received " + name.encode(), 0o644, 1_700_000_000_000, None)
             for name in ("a", "b")]  # fmt: skip
    out = sd.commit(batch)
    assert isinstance(out[0], syncdir.LocalChanged) and "went away locally" in str(out[0])
    assert not isinstance(out[1], Exception)
    assert (tmp_path / "a.moved").read_bytes() == b"received a"
    assert (tmp_path / "b").read_bytes() == b"received b"
    assert temps(tmp_path) == []
