"""The one driver's outbox (owsync/service/driver.py) on a real socket pair:
frames leave in order, a file's frames are made only as fast as the socket
drains, and what is queued in the first lane overtakes a file."""

from __future__ import annotations

import socket

from owsync.core.crypto import PlainCipher
from owsync.io.transport import Channel
from owsync.service.driver import OUT_BUFFER, Outbox, later

FRAME = 64 * 1024


def test_the_outbox_sends_in_order_as_the_socket_drains_and_lets_control_overtake_a_file():
    a, b = socket.socketpair()
    ch = Channel(a, PlainCipher(), 1 << 20, 5.0)
    made: list[int] = []

    def file_frames(n):
        for i in range(n):
            made.append(i)
            yield bytes([i]) * FRAME

    out = Outbox()
    out.put_bulk(file_frames(64))  # 4 MiB: more than a socket buffer holds
    out.put(later(lambda: b"S" * 10))
    out.drain(ch)
    # the control frame went first; the file only as far as OUT_BUFFER
    assert ch.out_bytes >= OUT_BUFFER and len(made) <= OUT_BUFFER // FRAME + 1
    got = bytearray()
    b.settimeout(5)
    made_before_u = None
    while True:
        ch.try_flush()
        if not out and ch.flushed:
            break
        got += b.recv(1 << 20)
        if made_before_u is None and len(made) >= 6:  # mid-file: an update overtakes it
            made_before_u = len(made)
            out.put(iter([b"U" * 10]))
        out.drain(ch)
    while len(got) < 64 * FRAME + 20:
        got += b.recv(1 << 20)
    assert got[:10] == b"S" * 10
    # right after the frames made before it was queued, never inside one
    assert made_before_u is not None and made_before_u < 64
    assert got.index(b"U" * 10) == 10 + made_before_u * FRAME
    at = 10 + made_before_u * FRAME
    body = got[10:at] + got[at + 10 :]
    assert body == b"".join(bytes([i]) * FRAME for i in range(64))
    a.close()
    b.close()
