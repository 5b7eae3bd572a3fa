"""No group syncs owsync's own state, whichever group's it is.

Each group has its database (with its journal and lock) and its version
store beside main's database.  When a group's directory holds them (here
group ``st`` holds main's database, and so every group's), that group's scan
and watcher skip them as they always skipped its own: real daemons, the
files never reach the peer and are not counted in the group's status.
"""

from __future__ import annotations

import pytest
from conftest import DaemonNode, group_conf, tracked, wait_for

SYNC = 30.0


@pytest.fixture
def nodes(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def node(nodes, tmp_path, name: str) -> DaemonNode:
    """Main on NAME-main; group ``st`` on NAME-st, which holds the database
    (so every group's, each beside main's); group ``other`` on NAME-other."""
    n = nodes(name)
    n.dir = tmp_path / f"{name}-main"
    n.st, n.other = tmp_path / f"{name}-st", tmp_path / f"{name}-other"
    for d in (n.dir, n.st, n.other):
        d.mkdir()
    n.db = n.st / f"{name}.db"
    return n


def state(d) -> list[str]:
    """The owsync state files and stores in ``d`` (named after a node)."""
    return sorted(p.name for p in d.iterdir() if p.name.startswith(("a.", "b.")))


def test_a_group_whose_dir_holds_the_databases_syncs_none_of_them(nodes, tmp_path):
    a, b = node(nodes, tmp_path, "a"), node(nodes, tmp_path, "b")
    for me, peer in ((a, b), (b, a)):
        me.configure([peer.addr], extra=group_conf("st", me.st) + group_conf("other", me.other))
    (a.st / "real.conf").write_text("synced\n")
    (a.dir / "main.conf").write_text("v1\n")
    (a.other / "other.conf").write_text("v1\n")
    a.start()
    b.start()
    assert wait_for(lambda: (b.st / "real.conf").exists() and (b.other / "other.conf").exists()
                    and (b.dir / "main.conf").exists(), SYNC), a.text() + b.text()  # fmt: skip
    # changes in main and other: their databases' journals grow, a version is kept
    (b.dir / "main.conf").write_text("v2 from b\n")
    (b.other / "other.conf").write_text("v2 from b\n")
    both = (a.dir / "main.conf", a.other / "other.conf")
    assert wait_for(lambda: all(p.read_text() == "v2 from b\n" for p in both), SYNC), a.text()
    for n in (a, b):
        r = n.ctl("sync", "--wait")
        assert r.returncode == 0, r.stdout + r.stderr
    # every group's state lies in a's st (main's, other's and st's own) ...
    held = state(a.st)
    assert {"a.db", "a.db.journal", "a.db.lock", "a.other.db", "a.other.db.lock",
            "a.st.db", "a.versions", "a.other.versions"} <= set(held), held  # fmt: skip
    # ... and none of it went to b, nor does either side count it
    assert not any(p.startswith("a.") for p in state(b.st)), state(b.st)
    assert not any(p.startswith("b.") for p in state(a.st)), state(a.st)
    for n in (a, b):
        st = next(g for g in n.status()["groups"] if g["name"] == "st")
        assert (st["files"], st["tombstones"]) == (1, 0), st
    assert sorted(p.name for p in b.st.iterdir() if not p.name.startswith("b.")) == ["real.conf"]
    for n in (a, b):  # (but for b not listening yet when a started)
        errors = [line for line in n.text().splitlines()
                  if "error" in line and "cannot connect" not in line]  # fmt: skip
        assert errors == [], n.text()
