"""Normal contention is no error: a session refused because the directory is busy.

A daemon refuses an incoming session while its directory is taken (by a
session, or here by the test holding its flock).  owsync 1.2.0 does not try
again until it finds another change of its own, so the daemon fetches what
the peer had in a session of its own, soon; and since a refusal is contention,
not a failure, it logs no error line and its history shows no failure.

The peer here is this owsync speaking v1 only (as 1.2.0): a `listen` on an
address of its own, and a one-shot `connect` from the same directory and
address, which, like 1.2.0's poll, does not come back.
"""

from __future__ import annotations

import fcntl

from conftest import DaemonNode, Node, free_port, wait_for


def test_a_refused_v1_peer_is_synced_with_soon_and_no_error_is_logged(tmp_path):
    b = Node(tmp_path, "b", max_protocol=1)  # the v1 peer (1.2.0's part)
    b_port = free_port()
    a = DaemonNode(tmp_path, "a")
    try:
        b.listen(host="127.0.0.2", port=b_port)
        # a long poll: only the fix brings b's file over within the test's wait
        a.configure([f"127.0.0.2:{b_port},127.0.0.1"], poll=600).start()
        assert wait_for(lambda: "sync with 127.0.0.2" in a.text() and " ok:" in a.text(), 20)
        b.write("from-b", "written on the v1 peer")
        with open(str(a.db) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a's directory is busy
            r = b.run("connect", f"127.0.0.1:{a.port},127.0.0.2", *b.opts())
            assert r.returncode != 0, r.stdout + r.stderr  # refused: a was busy
            assert wait_for(lambda: "another session" in a.text(), 10), a.text()
        # released: a fetches the file itself, from b's listener
        assert wait_for(lambda: a.has("from-b", b"written on the v1 peer"), 15), a.text()
        errors = [line for line in a.text().splitlines() if "error" in line]
        assert not errors, a.text()
        history = a.status()["history"]
        assert all(e["ok"] for e in history), history
    finally:
        a.stop()
        b.stop()


def test_a_peer_linked_after_a_failed_start_shows_no_failures(tmp_path):
    """Routers start one after the other: the first one's attempts fail until
    the second runs.  Once their live link is up, the peer's row says so and
    counts no consecutive failures (it counted them while the link lasted)."""
    a = DaemonNode(tmp_path, "a")
    b = DaemonNode(tmp_path, "b")
    try:
        a.configure([b.addr], poll=600).start()
        b.configure([a.addr], poll=600)
        assert wait_for(lambda: a.status()["peers"][0]["consecutive_failures"] >= 1, 20)
        b.start()

        def row() -> dict:
            return a.status()["peers"][0]

        assert wait_for(lambda: row()["state"] == "connected", 20), row()
        assert wait_for(lambda: row()["consecutive_failures"] == 0, 5), row()
    finally:
        a.stop()
        b.stop()
