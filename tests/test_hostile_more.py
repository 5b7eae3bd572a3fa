"""More hostile peers against real owsync processes (see test_hostile.py).

Every case checks four things: the node says what happened in one clear log line,
it keeps serving (a real ``owsync connect`` from another node syncs afterwards), a
canary tree outside the sync root (reachable from inside it through a symlink) is
unchanged, and memory stays bounded (the peak RSS of the node, VmHWM from
/proc/PID/status: a listener's read by the test, a connecting process's reported
by itself as it exits).

1. SyncStates of a million records and of the most records that fit a frame,
   against a listening and against a connecting node.
2. A directory inside the root swapped for a symlink to a directory outside it,
   between SyncState and FileContent.
3. Paths naming the database, its companions and temp files, the database inside
   the synced directory (the configuration allows it).
4. Modes with setuid, setgid, sticky and out-of-range bits.
5. Replay of a recorded encrypted session.
6. Unrequested FileContent, out-of-order messages and unknown message types, plain
   and encrypted, against a listener and against a connecting node.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    BOUND,
    KEY,
    Canary,
    MiB,
    Node,
    Peak,
    base_env,
    make_target,
    no_temp_files,
    rec,
    record_session,
    session_line,
    still_serves,
    tracked,
)

from owsync.core import protocol, protocol2
from owsync.core.crypto import AesGcmCipher, PlainCipher
from owsync.core.state import Record

LIMIT = protocol.MAX_FRAME  # 32 MiB with the default max_file_size
SEAL = 12 + 16  # nonce and tag of an encrypted payload
# A frame near the limit costs its sealed and opened copies at least: the largest
# FileContent (16 MiB of content, 32 MiB of hex) costs about 81 MiB.  No frame,
# whatever it carries, should cost more than four frame limits.
FRAME_BOUND = 4 * LIMIT


class RssOverBound(AssertionError):
    """Peak RSS above the bound the test sets (kept apart for xfail)."""


class WroteOutside(AssertionError):
    """Something was written outside the sync root (kept apart for xfail)."""


class Resurrected(AssertionError):
    """A deleted file came back (kept apart for xfail)."""


# --- a scripted peer ----------------------------------------------------------------


def cipher_for(mode: str):
    return AesGcmCipher(bytes.fromhex(KEY)) if mode == "encrypted" else PlainCipher()


class Wire:
    """One end of a protocol v1 connection, scripted by the test with owsync's codec."""

    def __init__(self, sock: socket.socket, cipher) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self.cipher = cipher
        self.dec = protocol.FrameDecoder()
        self.inbox: list[protocol.Message] = []
        self.label = f"127.0.0.1:{sock.getsockname()[1]}"  # how a listener logs us

    @classmethod
    def to(cls, port: int, cipher) -> Wire:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=10), cipher)

    def send_payload(self, payload: bytes) -> None:
        sealed = b"".join(self.cipher.seal_parts([payload]))
        self.sock.sendall(struct.pack(">I", len(sealed)) + sealed)

    def send(self, *msgs: protocol.Message) -> None:
        for msg in msgs:
            self.send_payload(protocol.encode(msg))

    def recv(self) -> protocol.Message:
        while not self.inbox:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.inbox += [protocol.decode(self.cipher.open(f)) for f in self.dec.feed(data)]
        return self.inbox.pop(0)

    def expect(self, kind):
        msg = self.recv()
        assert isinstance(msg, kind), msg
        return msg

    def recv_until_closed(self) -> list[protocol.Message]:
        out = []
        try:
            while True:
                out.append(self.recv())
        except ConnectionError:  # closed or reset (a timeout is a failure)
            pass
        return out

    def hello(self) -> protocol.SyncState:
        """As the connecting side: Hello both ways, then the listener's SyncState."""
        self.send(protocol.Hello("hostile", time.time()))
        self.expect(protocol.Hello)
        return self.expect(protocol.SyncState)

    def handshake(self, files=()) -> protocol.RequestFiles:
        self.hello()
        self.send(protocol.SyncState(tuple(files)))
        return self.expect(protocol.RequestFiles)

    def finish(self) -> list[protocol.Message]:
        """Our (empty) RequestFiles and EndOfSync; what the node still sends."""
        self.send(protocol.RequestFiles(()), protocol.EndOfSync())
        rest = self.recv_until_closed()
        self.sock.close()
        return rest

    def close(self) -> None:
        self.sock.close()


# --- what every case checks -------------------------------------------------------------


@pytest.fixture
def canary(tmp_path):
    return Canary(tmp_path / "canary")


# --- a listener of the test's own, for a real `owsync connect` ------------------------------


# A `connect` reports its own peak RSS (VmHWM of /proc/self/status) when it exits:
# ru_maxrss from wait4() would not do, as it keeps the parent's RSS across fork and exec.
PEAK_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def report():
    with open("/proc/self/status") as f:
        hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
    with open(out, "w") as f:
        f.write(hwm)
atexit.register(report)
sys.argv[0] = "owsync"
runpy.run_module("owsync", run_name="__main__", alter_sys=True)
"""


class ConnectRun:
    """A real `owsync connect` to a hostile listener run by the test."""

    def __init__(self, node: Node, tmp_path: Path) -> None:
        self.node = node
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(15)
        port = self.srv.getsockname()[1]
        self.out = tmp_path / f"{node.name}.connect.out"
        self.err = tmp_path / f"{node.name}.connect.err"
        self.hwm = tmp_path / f"{node.name}.connect.hwm"
        cmd = [sys.executable, "-c", PEAK_WRAPPER, str(self.hwm), "connect",
               f"127.0.0.1:{port}", *node.opts()]  # fmt: skip
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, env=base_env(node.key), stdout=out, stderr=err)
        self.peak = 0

    def accept(self) -> Wire:
        sock, _ = self.srv.accept()
        return Wire(sock, cipher_for("plain" if self.node.key is None else "encrypted"))

    def open(self) -> Wire:
        """Accept, and Hello both ways (theirs first, as a listener sees it)."""
        w = self.accept()
        w.expect(protocol.Hello)
        w.send(protocol.Hello("hostile-listener", time.time()))
        return w

    def wait(self, timeout: float = 60) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.close()
        self.peak = int(self.hwm.read_text()) * 1024
        return rc

    def close(self) -> None:
        """Stop the process if it still runs (our own child, by its PID)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.srv.close()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    def check_peak(self, what: str, baseline: int, bound: int = BOUND, exc=AssertionError):
        g = self.peak - baseline
        print(f"\n[peak RSS] {what}: {self.peak / MiB:.1f} MiB (+{g / MiB:.1f} MiB)")
        if g >= bound:
            raise exc(f"{what}: peak RSS {self.peak / MiB:.1f} MiB, +{g / MiB:.1f} MiB")


@pytest.fixture
def connect_run(tmp_path):
    """Start a ConnectRun; whatever still runs at the end of the test is stopped."""
    runs = []

    def start(node: Node) -> ConnectRun:
        runs.append(ConnectRun(node, tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


@pytest.fixture(scope="module")
def connect_baseline(tmp_path_factory) -> dict[str, int]:
    """Peak RSS of a `connect` through an empty session, per mode."""
    out = {}
    for mode in ("plain", "encrypted"):
        top = tmp_path_factory.mktemp(f"baseline-{mode}")
        n = Node(top, "n", key=None if mode == "plain" else KEY,
                 extra=["-p"] if mode == "plain" else [])  # fmt: skip
        run = ConnectRun(n, top)
        try:
            w = run.open()
            w.expect(protocol.SyncState)
            w.send(protocol.SyncState(()))
            w.expect(protocol.RequestFiles)
            w.send(protocol.RequestFiles(()), protocol.EndOfSync())
            w.expect(protocol.EndOfSync)
            w.close()
            assert run.wait() == 0, run.stderr
        finally:
            run.close()
        out[mode] = run.peak
    return out


# --- 1. a million records -------------------------------------------------------------------

HEAD = b'{"type":"SyncState","files":['
TAIL = b"]}"
HASH = hashlib.sha256(b"x").hexdigest()
# a record as owsync writes it (live, with its hash): 156 bytes
LIVE = protocol.encode(protocol.SyncState((Record("d/%07d", HASH, 1795637802000, 1, 0o644),)))
LIVE = LIVE[len(HEAD) : -len(TAIL)]
# the smallest record the decoder takes (a tombstone needs no hash): 61 bytes
TOMB = b'{"path":"%07d","deleted":true,"mtime":0,"size":0,"mode":0}'


def state_len(tmpl: bytes, n: int) -> int:
    return len(HEAD) + n * len(tmpl % 0) + max(0, n - 1) + len(TAIL)


def most_that_fit(tmpl: bytes, overhead: int, limit: int = LIMIT) -> int:
    n = (limit - overhead - len(HEAD) - len(TAIL) + 1) // (len(tmpl % 0) + 1)
    assert state_len(tmpl, n) + overhead <= limit < state_len(tmpl, n + 1) + overhead
    return n


def state_chunks(tmpl: bytes, n: int, per: int = 20_000):
    yield HEAD
    for start in range(0, n, per):
        end = min(n, start + per)
        yield (b"," if start else b"") + b",".join(tmpl % i for i in range(start, end))
    yield TAIL


def send_streamed(w: Wire, tmpl: bytes, n: int) -> bool:
    """Send a SyncState of ``n`` records as one frame, made and sealed piece by piece
    (the test never holds it whole).  False when the peer hung up before the end."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    size = state_len(tmpl, n)
    enc, nonce = None, b""
    if w.cipher.encrypted:
        nonce = os.urandom(12)
        enc = Cipher(algorithms.AES(bytes.fromhex(KEY)), modes.GCM(nonce)).encryptor()
        size += SEAL
    try:
        w.sock.sendall(struct.pack(">I", size) + nonce)
        for chunk in state_chunks(tmpl, n):
            w.sock.sendall(enc.update(chunk) if enc else chunk)
        if enc:
            w.sock.sendall(enc.finalize() + enc.tag)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


MILLION = 1_000_000


def test_a_million_records_are_refused_from_the_frame_header_by_a_listener(nodes, canary):
    """A million records cannot fit a 32 MiB frame (even tombstones, the smallest
    record the decoder takes, need 61 bytes each): the listener refuses the frame
    from its 4-byte header, before holding any of it."""
    assert state_len(TOMB, MILLION) + SEAL > LIMIT
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    w = Wire.to(a.port, cipher_for("encrypted"))
    w.hello()
    assert not send_streamed(w, LIVE, MILLION)  # hung up on us
    w.close()
    size = state_len(LIVE, MILLION) + SEAL
    line = session_line(a, w.label)
    assert f"failed: frame of {size} bytes exceeds the limit of {LIMIT}" in line, line
    peak.check("listener, a million records refused")
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")


def test_the_largest_file_content_costs_under_four_frames(nodes, canary):
    """The yardstick for the frames below: the largest file a frame carries (the
    designed maximum, README: "Frames are limited to 32 MiB") costs about 81 MiB."""
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    data = os.urandom(protocol.MAX_FRAME // 2 - 1024)
    w = Wire.to(a.port, cipher_for("encrypted"))
    assert w.handshake([rec("big", data)]).paths == ("big",)
    w.send(protocol.FileContent("big", 0o644, data))
    w.finish()
    assert "ok: received 1" in session_line(a, w.label)
    assert (a.dir / "big").read_bytes() == data
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check("listener, the largest FileContent", FRAME_BOUND)


MSG = protocol.MESSAGE_LIMIT  # 8 MiB for anything but a file's content


@pytest.mark.parametrize("kind", ["live", "tombstones"])
def test_a_state_over_the_message_limit_is_refused_within_the_frame_bound(nodes, canary, kind):
    """A SyncState that fits the 32 MiB frame but not the 8 MiB message limit (the
    frame is gathered, then refused before json.loads makes objects of it): one
    line, and no more memory than the largest FileContent costs.  Before the
    message limit, such a state cost 250-290 MiB."""
    tmpl = LIVE if kind == "live" else TOMB
    n = most_that_fit(tmpl, SEAL)
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    w = Wire.to(a.port, cipher_for("encrypted"))
    w.hello()
    send_streamed(w, tmpl, n)
    w.recv_until_closed()
    w.close()
    line = session_line(a, w.label)
    assert "that is not a file's content exceeds the limit of 8388608" in line, line
    assert set(a.files()) == {"sub/keep"}
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check(f"listener, {n} {kind} refused", FRAME_BOUND)


@pytest.mark.parametrize("kind", ["live", "tombstones"])
def test_the_most_records_under_the_message_limit_against_a_listener(nodes, canary, kind):
    """The largest SyncState taken: 8 MiB, about 53,000 records as owsync writes them
    (all new, so all requested, none sent), or 135,000 tombstones of 61 bytes.  The
    session completes within the bound every frame keeps."""
    tmpl = LIVE if kind == "live" else TOMB
    n = most_that_fit(tmpl, 0, MSG)
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    w = Wire.to(a.port, cipher_for("encrypted"))
    w.hello()
    start = time.monotonic()
    assert send_streamed(w, tmpl, n)
    req = w.expect(protocol.RequestFiles)
    assert len(req.paths) == (n if kind == "live" else 0)
    w.finish()
    line = session_line(a, w.label)
    assert "ok: received 0" in line, line
    if kind == "live":
        assert f"{n} requested file(s) did not arrive" in a.log.read_text()
    print(f"\n[{kind}] {n} records in {time.monotonic() - start:.1f} s")
    assert set(a.files()) == {"sub/keep"}
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check(f"listener, {n} {kind}", FRAME_BOUND)


def test_a_million_records_are_refused_by_a_connecting_node(
    nodes, canary, tmp_path, connect_run, connect_baseline
):
    """The same against a real `owsync connect`, the test being its listener."""
    b = nodes("b")
    b.write("mine", "m")
    canary.link_from(b)
    run = connect_run(b)
    w = run.open()
    w.expect(protocol.SyncState)
    assert not send_streamed(w, LIVE, MILLION)
    w.close()
    assert run.wait() == 1
    size = state_len(LIVE, MILLION) + SEAL
    err = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(err) == 1, run.stderr
    assert f"failed: frame of {size} bytes exceeds the limit of {LIMIT}" in err[0]
    assert "Traceback" not in run.stderr
    run.check_peak("connect, a million records refused", connect_baseline["encrypted"])
    canary.assert_unchanged()
    assert b.files() == {"mine": b"m"}
    b.sync_ok(make_target(nodes, Canary(tmp_path / "c2"), "a").listen())  # db and lock fine


def test_the_most_records_under_the_message_limit_against_a_connecting_node(
    nodes, canary, connect_run, connect_baseline
):
    b = nodes("b")
    b.write("mine", "m")
    canary.link_from(b)
    n = most_that_fit(TOMB, 0, MSG)
    run = connect_run(b)
    w = run.open()
    w.expect(protocol.SyncState)
    assert send_streamed(w, TOMB, n)
    assert w.expect(protocol.RequestFiles) == protocol.RequestFiles(())
    w.send(protocol.RequestFiles(()), protocol.EndOfSync())
    w.expect(protocol.EndOfSync)
    w.close()
    assert run.wait() == 0, run.stderr
    assert run.stdout.startswith("received 0, sent 0, deleted 0"), run.stdout
    canary.assert_unchanged()
    assert b.files() == {"mine": b"m"}
    run.check_peak(f"connect, {n} tombstones", connect_baseline["encrypted"], FRAME_BOUND)


# --- 2. a directory swapped for a symlink mid-session ---------------------------------------


def advertise_under_sub(a: Node) -> tuple[Wire, dict[str, bytes]]:
    files = {"sub/evil1": b"pwned 1", "sub/evil2": b"pwned 2", "top": b"fine"}
    w = Wire.to(a.port, cipher_for("encrypted"))
    req = w.handshake([rec(p, d) for p, d in files.items()])
    assert set(req.paths) == set(files)
    return w, files


def test_sub_swapped_for_a_symlink_before_any_file_arrives(nodes, canary):
    """The node requested sub/evil*; then sub becomes a symlink to the canary; then the
    files come.  The directory is walked with O_NOFOLLOW when the first of them is
    written, or, when the node had opened it already (its scan took the version
    store's copy of sub/keep), its descriptor no longer matches the path: refused
    either way, nothing outside, the other file written."""
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    w, files = advertise_under_sub(a)
    shutil.rmtree(a.dir / "sub")
    canary.link_from(a, "sub")
    w.send(*(protocol.FileContent(p, 0o644, d) for p, d in files.items()))
    w.finish()
    line = session_line(a, w.label)
    assert "ok: received 1" in line, line
    log = a.log.read_text()
    assert (
        "not writing: 'sub' is not a plain directory" in log
        or "'sub' was moved or replaced during the session" in log
    ), log
    canary.assert_unchanged()
    assert (a.dir / "top").read_bytes() == b"fine"
    assert no_temp_files(a.dir)
    still_serves(a, nodes, "checker")
    peak.check("listener, sub swapped for a symlink")


def walk_sub_then_swap(a: Node, replace) -> Wire:
    """The peer asks for sub/keep first, so that the node has walked into sub (its
    descriptor is cached for the session); then ``replace`` swaps sub; then the
    files under sub/ arrive."""
    w, files = advertise_under_sub(a)
    w.send(protocol.RequestFiles(("sub/keep",)))
    assert w.expect(protocol.FileContent).path == "sub/keep"
    w.expect(protocol.EndOfSync)
    replace()
    w.send(*(protocol.FileContent(p, 0o644, d) for p, d in files.items()))
    w.send(protocol.EndOfSync())
    w.recv_until_closed()
    w.close()
    return w


def test_sub_removed_and_swapped_after_the_node_walked_into_it(nodes, canary):
    """With sub already walked, the node finds its descriptor of sub no longer names
    the directory at sub (SyncDir checks each held directory against its path before
    writing or renaming through it): the files under sub/ are skipped with a "not
    writing ... was moved or replaced" line.  Nothing reaches the symlink's target."""
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)

    def replace():
        shutil.rmtree(a.dir / "sub")
        canary.link_from(a, "sub")

    w = walk_sub_then_swap(a, replace)
    line = session_line(a, w.label)
    assert "ok: received 1" in line, line
    assert "was moved or replaced during the session" in a.log.read_text()
    canary.assert_unchanged()
    assert no_temp_files(a.dir)
    still_serves(a, nodes, "checker")
    peak.check("listener, sub removed after it was walked")


def test_sub_moved_out_of_the_root_after_the_node_walked_into_it(nodes, canary, tmp_path):
    """As above, but the directory is moved out of the root instead of removed (what a
    `mv` by anyone with write access to the root does)."""
    a = make_target(nodes, canary).listen()
    moved = tmp_path / "moved-out"

    def replace():
        os.rename(a.dir / "sub", moved)
        canary.link_from(a, "sub")

    w = walk_sub_then_swap(a, replace)
    session_line(a, w.label)
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    if sorted(os.listdir(moved)) != ["keep"]:
        raise WroteOutside(f"written outside the root: {sorted(os.listdir(moved))}")


# --- 3. the database, its companions, temp files ----------------------------------------------

OWN = ["owsync.db", "owsync.db.db_tmp", "owsync.db.lock", "owsync.db.corrupt"]
TEMPS = [".owsync-0123456789ab.tmp", "sub/.owsync-0123456789ab.tmp"]
ORDINARY = ["owsync.db2", "owsync.dbx", "x.owsync.tmp", "owsync-0123456789ab.tmp"]


@pytest.mark.parametrize("where", ["", "state/"])
def test_paths_naming_the_database_and_temp_files(nodes, canary, where):
    """config.py takes a database inside the synced directory (no check refuses it),
    so it is tested there: the database, <db>.db_tmp, <db>.lock, <db>.corrupt and the
    .owsync-*.tmp temp names are neither advertised, requested, served, written nor
    deleted; names that only look like them are ordinary files."""
    own = [where + p for p in OWN]
    a = make_target(nodes, canary)
    a.db = a.dir / own[0]
    a.listen()
    still_serves(a, nodes, "warmup")  # the database and its lock exist now
    lock = os.stat(a.dir / own[2])
    peak = Peak(a.proc.pid)
    w = Wire.to(a.port, cipher_for("encrypted"))
    theirs = w.hello()
    known = {"sub/keep", "probe-warmup", "from-warmup"}
    assert {r.path for r in theirs.files} == known  # none of its own files
    names = own + TEMPS + ORDINARY
    w.send(protocol.SyncState(tuple(rec(p, b"pwned " + p.encode()) for p in names)))
    req = w.expect(protocol.RequestFiles)
    assert list(req.paths) == ORDINARY
    w.send(*(protocol.FileContent(p, 0o644, b"pwned " + p.encode()) for p in names))
    w.send(protocol.RequestFiles((*own, *TEMPS, "sub/keep")))
    w.send(protocol.EndOfSync())
    got = [m.path for m in w.recv_until_closed() if isinstance(m, protocol.FileContent)]
    w.close()
    assert got == ["sub/keep"]  # nor served
    line = session_line(a, w.label)
    assert f"ok: received {len(ORDINARY)}" in line, line
    log = a.log.read_text()
    for p in own + TEMPS:
        assert f"refused {p!r} from {w.label}: not requested" in log
    db = json.loads(a.db.read_bytes())  # whole, and ours
    assert set(db["files"]) == {*known, *ORDINARY}
    assert os.stat(a.dir / own[2]).st_ino == lock.st_ino
    assert not (a.dir / own[1]).exists() and not (a.dir / own[3]).exists()
    for p in ORDINARY:
        assert (a.dir / p).read_bytes() == b"pwned " + p.encode()
    assert no_temp_files(a.dir)

    # tombstones for them, newer than anything: nothing deleted
    w = Wire.to(a.port, cipher_for("encrypted"))
    req = w.handshake([rec(p, deleted=True) for p in own + TEMPS])
    assert req.paths == ()
    w.finish()
    assert "ok: received 0, sent 0, deleted 0" in session_line(a, w.label)
    assert set(json.loads(a.db.read_bytes())["files"]) == {*known, *ORDINARY}
    assert (a.dir / own[2]).exists()
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check("listener, database and temp names")


# --- 4. modes ---------------------------------------------------------------------------------

SPECIAL = 0o7000
MODES = {  # path: (advertised and sent mode, what the file gets)
    "m-suid": (0o4755, 0o755),
    "m-sgid-sticky": (0o6777, 0o777),
    "m-all-bits": (0o177777, 0o777),
    "m-2-to-the-40": (2**40, 0o000),
    "m-2-to-the-64": (2**64 + 0o640, 0o640),
    "m-replaces-setuid": (0o4755, 0o755),
    "m-large-fast-path": (0o7777, 0o777),  # over 4 KiB: the decoder's fast path
}


def test_special_and_out_of_range_mode_bits_are_masked(nodes, canary):
    """The decoder keeps `mode & 0o777` of any non-negative mode, in SyncState and
    FileContent alike, and the file is fchmod()ed with that: no setuid, setgid or
    sticky bit ever reaches a received file, even one replacing a setuid file."""
    a = make_target(nodes, canary)
    old = a.write("m-replaces-setuid", "old")
    old.chmod(0o4755)
    os.utime(old, (1, 1))
    a.listen()
    peak = Peak(a.proc.pid)
    data = {p: (b"z" * 5000 if "large" in p else p.encode()) for p in MODES}
    records = []
    for p, (mode, _) in MODES.items():
        r = rec(p, data[p])
        records.append(r._replace(mode=mode))
    w = Wire.to(a.port, cipher_for("encrypted"))
    req = w.handshake(records)
    assert set(req.paths) == set(MODES)
    w.send(*(protocol.FileContent(p, mode, data[p]) for p, (mode, _) in MODES.items()))
    w.finish()
    assert f"ok: received {len(MODES)}" in session_line(a, w.label)
    db = json.loads(a.db.read_bytes())["files"]
    for p, (_, want) in MODES.items():
        st = os.lstat(a.dir / p)
        assert stat.S_IMODE(st.st_mode) & SPECIAL == 0, p
        assert stat.S_IMODE(st.st_mode) == want, (p, oct(st.st_mode))
        assert db[p]["mode"] == want, p
        assert (a.dir / p).read_bytes() == data[p]
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check("listener, mode bits")


def raw_content(path: str, mode, data: bytes) -> bytes:
    return (
        b'{"type":"FileContent","path":' + json.dumps(path).encode() + b',"mode":'
        + json.dumps(mode).encode() + b',"data":"' + data.hex().encode() + b'"}'
    )  # fmt: skip


def raw_state(path: str, mode, data: bytes) -> bytes:
    r = protocol.record_to_wire(rec(path, data))
    r["mode"] = mode
    return json.dumps({"type": "SyncState", "files": [r]}).encode()


@pytest.mark.parametrize(
    "where,mode,size",
    [("state", -1, 5), ("state", 1e19, 5), ("content", -1, 5), ("content", -1, 5000)],
)
def test_negative_and_unrepresentable_modes_are_protocol_errors(nodes, canary, where, mode, size):
    """A negative mode (or, in a SyncState, a double no 64-bit integer holds) ends the
    session with a protocol error; what arrived before it in the session is kept, so
    no data is lost, and nothing is left half-written."""
    a = make_target(nodes, canary).listen()
    peak = Peak(a.proc.pid)
    bad = b"b" * size
    w = Wire.to(a.port, cipher_for("encrypted"))
    if where == "state":
        w.hello()
        w.send_payload(raw_state("n-bad", mode, bad))
        want = "SyncState: malformed file record (bad number)"
    else:
        req = w.handshake([rec("n-ok", b"good"), rec("n-bad", bad)])
        assert set(req.paths) == {"n-ok", "n-bad"}
        w.send(protocol.FileContent("n-ok", 0o640, b"good"))
        w.send_payload(raw_content("n-bad", mode, bad))
        want = "FileContent: field 'mode' out of range"
    w.recv_until_closed()
    w.close()
    line = session_line(a, w.label)
    assert f"failed: {want}" in line, line
    assert not (a.dir / "n-bad").exists()
    if where == "content":
        assert (a.dir / "n-ok").read_bytes() == b"good"
        assert json.loads(a.db.read_bytes())["files"]["n-ok"]["mode"] == 0o640
    assert no_temp_files(a.dir)
    assert (a.dir / "sub/keep").read_bytes() == b"k"
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check(f"listener, mode {mode} in {where}")


# --- 5. replay of a recorded encrypted session ----------------------------------------------


def replay(port: int, data: bytes) -> tuple[str, list[bytes]]:
    """Send recorded bytes verbatim; the v1 frames the listener sent back, still sealed."""
    label, back = replay_raw(port, data)
    return label, [bytes(f) for f in protocol.FrameDecoder().feed(back)]


def replay_raw(port: int, data: bytes) -> tuple[str, bytes]:
    """Send recorded bytes verbatim; the bytes the listener sent back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    label = f"127.0.0.1:{s.getsockname()[1]}"
    s.sendall(data)
    back = bytearray()
    try:
        while chunk := s.recv(65536):
            back += chunk
    except OSError:
        pass
    s.close()
    return label, bytes(back)


def test_a_replayed_v2_session_is_refused_before_anything_happens(nodes, canary):
    """Protocol v2 binds every frame to its session: keys derived from both sides'
    fresh nonces, counter nonces, the Hellos in the first frame each way.  A
    recording of what `connect` sent, replayed verbatim, fails at its first v2
    frame: the listener never scans, writes, deletes or sends a file."""
    a = make_target(nodes, canary)
    a.listen()
    b = nodes("b")
    b.write("new", "from b")
    a.write("a-only", "from a")
    recorded = record_session(a, b)
    assert "protocol 2" in a.wait_log("ok: received 1, sent 1")
    (a.dir / "new").unlink()
    a.write("a-only", "newer, from a")
    before = a.files()
    label, back = replay_raw(a.port, recorded)
    line = session_line(a, label)
    assert "failed: frame 0 (AUTH) failed authentication" in line, line
    assert a.files() == before
    # what the listener sent: its Hello, its AUTH and an ERROR saying why, no state
    hello, rest = protocol2.split_hello_frame(back)
    assert hello is not None
    kinds = []
    while rest:
        n, kind = rest[0:4], rest[4]
        kinds.append(protocol2.NAMES[kind])
        rest = rest[5 + int.from_bytes(n, "big") :]
    assert kinds == ["AUTH", "ERROR"], kinds
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")


def test_a_replayed_encrypted_session_changes_nothing_newer(nodes, canary, tmp_path):
    """What an attacker who recorded an encrypted session can do under protocol v1
    (nodes that speak v1 only, as owsync 1.2.0 does; between two nodes that speak
    v2 the replay is refused, see the test above).

    v1 has no session binding: random nonces, no sequence numbers, no challenge, so a
    recording of what `connect` sent is, replayed verbatim (to the same node or any
    other that holds the key), a valid session.  The
    only freshness is the Hello's timestamp: a replay is taken within 60 s of the
    recording (the clock-skew window), and refused after.  Taken, it presents the
    peer's state at the time of the recording, and last-writer-wins judges it as
    any state: every version in it is one the listener already had after the
    recorded session, so a newer write on the listener (even one whose tool kept an
    old mtime) wins, a file deleted since is not resurrected, and a file deleted by
    the recording and re-created since is not deleted again; the recorded file
    contents arrive unrequested and are refused.  What the attacker does get: the
    listener runs a session (a log line, a status entry, its directory lock held
    while the replay lasts, up to the 30-minute session limit when trickled), and it
    sends again, sealed, the files the recording requested: the attacker sees their
    frames' count and sizes, not their contents.  (A version whose mtime lies ahead
    of the listener's clock is the exception: see the next test.)
    """
    a = make_target(nodes, canary, max_protocol=1)
    a.write("gone", "g")
    a.listen()
    b = nodes("b", max_protocol=1)
    b.sync_ok(a)  # b has gone and sub/keep
    old = time.time() - 1000
    (b.dir / "gone").unlink()
    for p in ("conf", "conf-cp", "doomed", "same"):
        b.write(p, f"{p} v1", mtime=old)
    a.write("a-only", "from a")
    recorded = record_session(a, b)  # a takes conf, conf-cp, doomed, same; deletes gone
    assert not (a.dir / "gone").exists()
    assert (a.dir / "conf").read_text() == "conf v1"

    # the listener's files change after the recording
    a.write("conf", "conf v2, newer")
    a.write("conf-cp", "conf v2, with an old mtime", mtime=old - 500)  # cp -p, a restore
    (a.dir / "doomed").unlink()
    a.write("gone", "re-created")
    peak = Peak(a.proc.pid)
    label, frames = replay(a.port, recorded)
    line = session_line(a, label)
    assert "ok: received 0, sent 1, deleted 0" in line, line  # taken as a session
    log = a.log.read_text()
    for p in ("conf", "conf-cp", "doomed", "same"):
        assert f"refused {p!r} from {label}: not requested" in log
    assert a.files() == {
        "sub/keep": b"k",
        "a-only": b"from a",
        "conf": b"conf v2, newer",
        "conf-cp": b"conf v2, with an old mtime",
        "same": b"same v1",
        "gone": b"re-created",
    }
    # what the replay made the listener send: sealed frames, one of them a-only again
    cipher = cipher_for("encrypted")
    kinds = [type(protocol.decode(cipher.open(f))).__name__ for f in frames]
    assert kinds == ["Hello", "SyncState", "RequestFiles", "FileContent", "EndOfSync"]

    # after the skew window the same bytes are refused before anything is touched
    late = nodes("a", max_protocol=1)  # the same directory and database, 2 minutes ahead
    late.log = tmp_path / "a-late.log"
    late.extra = list(a.extra)
    late.listen(clock_offset=120)
    before = a.files()
    label, _ = replay(late.port, recorded)
    assert "failed: clock skew of" in session_line(late, label)
    assert a.files() == before
    late.stop()

    b.sync_ok(a)  # the real peer converges on the newer state
    assert b.files() == a.files()
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check("listener, replayed session")


def test_a_replay_resurrects_a_deletion_of_a_version_stamped_ahead(nodes, canary):
    """The writer's clock 30 s ahead (inside the 60 s skew owsync accepts, or just a
    file with a future mtime): the listener deletes that version after the recording
    and the replay brings it back, as would the next session with the real peer.  A
    local write is stamped after the version it replaces (state.observe_file), a
    local deletion is not."""
    a = make_target(nodes, canary, max_protocol=1).listen()
    b = nodes("b", max_protocol=1)
    b.write("ahead", "written by a fast clock", mtime=time.time() + 30)
    recorded = record_session(a, b)
    assert (a.dir / "ahead").exists()
    (a.dir / "ahead").unlink()
    label, _ = replay(a.port, recorded)
    session_line(a, label)
    canary.assert_unchanged()
    if (a.dir / "ahead").exists():
        raise Resurrected("the deleted file is back: " + (a.dir / "ahead").read_text())


# --- 6. unrequested FileContent, out of order, unknown types ----------------------------------
#
# test_hostile.py pushes unrequested FileContent only for unsafe paths, and the
# order rules are tested on the pure session machine (test_core.py, test_fuzz.py);
# none of these reached a real process, nor ran in plain mode.


def seq_unrequested_new(w, a, tag):
    w.handshake()
    w.send(protocol.FileContent(f"planted-{tag}", 0o644, b"pwned"))
    w.finish()
    assert not (a.dir / f"planted-{tag}").exists()
    return "ok", f"refused 'planted-{tag}' from {w.label}: not requested"


def seq_unrequested_overwrite(w, a, tag):
    w.handshake()
    w.send(protocol.FileContent("sub/keep", 0o4777, b"pwned"))
    w.finish()
    assert (a.dir / "sub/keep").read_bytes() == b"k"
    return "ok", f"refused 'sub/keep' from {w.label}: not requested"


def seq_content_twice(w, a, tag):
    p = f"twice-{tag}"
    assert w.handshake([rec(p, b"first")]).paths == (p,)
    w.send(protocol.FileContent(p, 0o644, b"first"), protocol.FileContent(p, 0o644, b"second"))
    w.finish()
    assert (a.dir / p).read_bytes() == b"first"
    return "ok: received 1", f"refused {p!r} from {w.label}: not requested"


def seq_content_before_hello(w, a, tag):
    w.send(protocol.FileContent("early", 0o644, b"x"))
    w.recv_until_closed()
    return "failed", "expected Hello, got FileContent"


def seq_content_before_state(w, a, tag):
    w.hello()
    w.send(protocol.FileContent("early", 0o644, b"x"))
    w.recv_until_closed()
    return "failed", "unexpected FileContent before the SyncState exchange"


def seq_second_hello_before_state(w, a, tag):
    w.hello()
    w.send(protocol.Hello("again", time.time()))
    w.recv_until_closed()
    return "failed", "unexpected Hello"


def seq_second_hello_in_exchange(w, a, tag):
    w.handshake()
    w.send(protocol.Hello("again", time.time()))
    w.recv_until_closed()
    return "failed", "unexpected Hello"


def seq_request_before_state(w, a, tag):
    w.hello()
    w.send(protocol.RequestFiles(("sub/keep",)))
    got = w.recv_until_closed()
    assert not [m for m in got if isinstance(m, protocol.FileContent)]
    return "failed", "unexpected RequestFiles before the SyncState exchange"


def seq_second_request(w, a, tag):
    w.handshake()
    w.send(protocol.RequestFiles(()), protocol.RequestFiles(("sub/keep",)))
    got = w.recv_until_closed()
    assert not [m for m in got if isinstance(m, protocol.FileContent)]
    return "failed", "second RequestFiles"


def seq_end_before_request(w, a, tag):
    w.handshake()
    w.send(protocol.EndOfSync())
    w.recv_until_closed()
    return "failed", "EndOfSync before RequestFiles"


def seq_second_state(w, a, tag):
    w.handshake()
    w.send(protocol.SyncState(()))
    w.recv_until_closed()
    return "failed", "unexpected SyncState"


def seq_unknown_type_first(w, a, tag):
    w.send_payload(b'{"type":"Goodbye","hostname":"x","timestamp":1,"version":1}')
    w.recv_until_closed()
    return "failed", "unknown message type 'Goodbye'"


def seq_unknown_type_in_exchange(w, a, tag):
    w.handshake()
    w.send_payload(b'{"type":"Delete","paths":["sub/keep"]}')
    w.recv_until_closed()
    assert (a.dir / "sub/keep").exists()
    return "failed", "unknown message type 'Delete'"


def seq_no_type(w, a, tag):
    w.handshake()
    w.send_payload(b'{"paths":["sub/keep"]}')
    w.recv_until_closed()
    return "failed", "unknown message type None"


SEQUENCES = {
    f.__name__.removeprefix("seq_"): f
    for f in (
        seq_unrequested_new,
        seq_unrequested_overwrite,
        seq_content_twice,
        seq_content_before_hello,
        seq_content_before_state,
        seq_second_hello_before_state,
        seq_second_hello_in_exchange,
        seq_request_before_state,
        seq_second_request,
        seq_end_before_request,
        seq_second_state,
        seq_unknown_type_first,
        seq_unknown_type_in_exchange,
        seq_no_type,
    )
}


@pytest.fixture(scope="module")
def shared_nodes(tmp_path_factory):
    yield from tracked(tmp_path_factory.mktemp("shared"), Node)


@pytest.fixture(scope="module", params=["plain", "encrypted"])
def served(request, shared_nodes, tmp_path_factory):
    """One listener per mode for all the sequences (each leaves it as it found it)."""
    c = Canary(tmp_path_factory.mktemp(f"canary-{request.param}") / "tree")
    a = make_target(shared_nodes, c, f"a-{request.param}", request.param).listen()
    a.canary = c
    return a


@pytest.mark.parametrize("seq", sorted(SEQUENCES))
def test_out_of_order_and_unrequested_messages_against_a_listener(served, shared_nodes, seq):
    a = served
    since = len(a.log.read_text())
    before = a.files()
    peak = Peak(a.proc.pid)
    w = Wire.to(a.port, cipher_for("plain" if a.plain else "encrypted"))
    outcome, text = SEQUENCES[seq](w, a, seq)
    w.close()
    line = session_line(a, w.label, since)
    assert f"sync with {w.label} {outcome}" in line, line
    log = a.log.read_text()[since:]
    assert text in (line if outcome == "failed" else log), log
    after = a.files()
    assert {p: after[p] for p in before} == before  # nothing lost or overwritten
    assert set(after) - set(before) <= ({f"twice-{seq}"} if seq == "content_twice" else set())
    assert no_temp_files(a.dir)
    a.canary.assert_unchanged()
    still_serves(a, shared_nodes, f"checker-{'plain' if a.plain else 'enc'}-{seq}")
    peak.check(f"listener, {seq}")


# the same against a real `owsync connect`, the test being its listener


def lseq_content_before_hello(w):
    w.expect(protocol.Hello)
    w.send(protocol.FileContent("early", 0o644, b"x"))
    return "expected Hello, got FileContent"


def lseq_content_before_state(w):
    w.expect(protocol.Hello)
    w.send(protocol.Hello("h", time.time()), protocol.FileContent("early", 0o644, b"x"))
    return "unexpected FileContent before the SyncState exchange"


def lseq_second_hello(w):
    w.expect(protocol.Hello)
    w.send(protocol.Hello("h", time.time()), protocol.Hello("h", time.time()))
    return "unexpected Hello"


def lseq_request_before_state(w):
    w.expect(protocol.Hello)
    w.send(protocol.Hello("h", time.time()), protocol.RequestFiles(("mine",)))
    return "unexpected RequestFiles before the SyncState exchange"


def lseq_unknown_type(w):
    w.expect(protocol.Hello)
    w.send(protocol.Hello("h", time.time()))
    w.expect(protocol.SyncState)
    w.send_payload(b'{"type":"Goodbye"}')
    return "unknown message type 'Goodbye'"


def lseq_unrequested_content(w):
    w.expect(protocol.Hello)
    w.send(protocol.Hello("h", time.time()))
    w.expect(protocol.SyncState)
    w.send(protocol.SyncState(()))
    assert w.expect(protocol.RequestFiles).paths == ()
    w.send(protocol.FileContent("planted", 0o644, b"pwned"), protocol.FileContent("mine", 0, b""))
    w.send(protocol.RequestFiles(()), protocol.EndOfSync())
    w.expect(protocol.EndOfSync)
    return None


LSEQUENCES = {
    f.__name__.removeprefix("lseq_"): f
    for f in (
        lseq_content_before_hello,
        lseq_content_before_state,
        lseq_second_hello,
        lseq_request_before_state,
        lseq_unknown_type,
        lseq_unrequested_content,
    )
}


@pytest.fixture(scope="module")
def real_listeners(shared_nodes, tmp_path_factory):
    """A real listener per mode, for the connecting node's next session."""
    made = {}

    def get(mode: str) -> Node:
        if mode not in made:
            c = Canary(tmp_path_factory.mktemp(f"canary-peer-{mode}") / "tree")
            made[mode] = make_target(shared_nodes, c, f"peer-{mode}", mode).listen()
        return made[mode]

    return get


@pytest.mark.parametrize("mode", ["plain", "encrypted"])
@pytest.mark.parametrize("seq", sorted(LSEQUENCES))
def test_out_of_order_and_unrequested_messages_against_a_connecting_node(
    nodes, canary, connect_run, connect_baseline, real_listeners, mode, seq
):
    """A `connect` is one session: after it, the same node's next session with a real
    listener completes (its directory lock released, its database whole)."""
    plain = mode == "plain"
    b = nodes("b", key=None if plain else KEY, extra=["-p"] if plain else [])
    b.write("mine", "m")
    canary.link_from(b)
    run = connect_run(b)
    w = run.accept()
    text = LSEQUENCES[seq](w)
    if text is not None:  # a failed session hangs up; one that went well waits for us
        w.recv_until_closed()
    w.close()
    rc = run.wait()
    assert "Traceback" not in run.stderr
    if text is None:
        assert rc == 0, run.stderr
        assert "refused 'planted'" in run.stderr and "refused 'mine'" in run.stderr
    else:
        assert rc == 1
        err = [line for line in run.stderr.splitlines() if "error" in line]
        assert len(err) == 1 and f"failed: {text}" in err[0], run.stderr
    assert b.files() == {"mine": b"m"}
    assert no_temp_files(b.dir)
    canary.assert_unchanged()
    run.check_peak(f"connect, {seq}, {mode}", connect_baseline[mode])
    peer = real_listeners(mode)
    b.sync_ok(peer)
    assert b.files()["sub/keep"] == b"k" and (peer.dir / "mine").read_bytes() == b"m"
