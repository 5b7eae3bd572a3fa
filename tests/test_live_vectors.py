"""The live link against fixed vectors from an independent implementation.

tests/vectors/live/generate.py derives them from docs/PROTOCOL.md alone (it
imports nothing from owsync): the Hellos with their live offers, T, the X25519
shared secret, both direction keys, the keys after a REKEY, and a short link
both ways.  owsync must derive the same values, make the same frames byte for
byte (AES-GCM with counter nonces is deterministic) and read the vectors'
frames as the events they stand for.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from owsync.core import live, protocol2
from owsync.core.live import (
    Acked,
    Authenticated,
    Bye,
    FileChunk,
    FileDone,
    FileStart,
    IndexEnd,
    LiveLink,
    PeersChanged,
    Records,
    Requested,
    RolesChanged,
    Skipped,
)
from owsync.core.protocol import Hello
from owsync.core.state import Record

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS_DIR = os.path.join(HERE, "vectors", "live")
with open(os.path.join(VECTORS_DIR, "link.json")) as _f:
    V = json.load(_f)
PSK = bytes.fromhex(V["psk"])
HELLO_I, HELLO_R = V["hello_i"].encode(), V["hello_r"].encode()
SECRET_I, SECRET_R = bytes.fromhex(V["x25519_secret_i"]), bytes.fromhex(V["x25519_secret_r"])
WIRE = {d: [bytes.fromhex(f["wire"]) for f in V["frames"] if f["dir"] == d] for d in ("i2r", "r2i")}


def _generator():
    spec = importlib.util.spec_from_file_location(
        "livegen", os.path.join(VECTORS_DIR, "generate.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(path: str) -> Record:
    r = V["files"][path]["record"]
    return Record(r["path"], r["hash"], r["mtime"], r["size"], r["mode"], r["deleted"])


def _content(path: str) -> bytes:
    return bytes.fromhex(V["files"][path]["content"])


# --- the generator ------------------------------------------------------------


@pytest.mark.parametrize(
    "salt, info, okm",
    [  # RFC 5869 A.1 (with salt and info), A.3 (neither: the rekey's case)
        (
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            "",
            "",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_the_vector_generator_hkdf_is_rfc5869(salt, info, okm):
    gen = _generator()
    out = gen.hkdf_sha256(bytes.fromhex("0b" * 22), bytes.fromhex(salt), bytes.fromhex(info), 42)
    assert out.hex() == okm


def test_the_recorded_vectors_are_what_the_generator_derives():
    gen = _generator()
    assert gen.T.hex() == V["transcript"] and gen.SHARED.hex() == V["shared"]
    assert (gen.K_I2R.hex(), gen.K_R2I.hex()) == (V["k_i2r"], V["k_r2i"])
    assert (gen.NEXT_I2R.hex(), gen.NEXT_R2I.hex()) == (V["next_k_i2r"], V["next_k_r2i"])
    assert gen.frames() == V["frames"]


# --- keys -------------------------------------------------------------------------


def test_hello_payloads_carry_the_live_offer_as_owsync_makes_it():
    for side, host, ts in (("i", "router-a", 1795600000.0), ("r", "router-b", 1795600001.0)):
        secret = bytes.fromhex(V[f"x25519_secret_{side}"])
        public = live.x25519_public(secret)
        assert public.hex() == V[f"x25519_public_{side}"]
        fields = live.advertise(bytes.fromhex(V[f"nonce_{side}"]), V[f"node_{side}"], public)
        assert protocol2.hello_payload(Hello(host, ts), fields) == V[f"hello_{side}"].encode()
        offer = live.peer_live(protocol2.hello_fields(V[f"hello_{side}"].encode()))
        assert offer == live.PeerLive(V[f"node_{side}"], public)


def test_shared_secret_transcript_and_keys_match_the_vectors():
    pub_i, pub_r = bytes.fromhex(V["x25519_public_i"]), bytes.fromhex(V["x25519_public_r"])
    assert live.x25519_shared(SECRET_I, pub_r).hex() == V["shared"]
    assert live.x25519_shared(SECRET_R, pub_i).hex() == V["shared"]
    t = bytes.fromhex(V["transcript"])
    assert protocol2.transcript(HELLO_I, HELLO_R) == t
    k_i2r, k_r2i = bytes.fromhex(V["k_i2r"]), bytes.fromhex(V["k_r2i"])
    ki = live.link_keys(PSK, True, HELLO_I, HELLO_R, SECRET_I)
    kr = live.link_keys(PSK, False, HELLO_R, HELLO_I, SECRET_R)
    assert ki == protocol2.Keys(t, k_i2r, k_r2i, True)
    assert kr == protocol2.Keys(t, k_r2i, k_i2r, False)


def test_the_key_after_a_rekey_matches_the_vectors():
    for direction in ("i2r", "r2i"):
        key = bytes.fromhex(V[f"k_{direction}"])
        assert protocol2.next_key(key).hex() == V[f"next_k_{direction}"]


# --- the link -------------------------------------------------------------------


def _events(link: LiveLink, wires: list[bytes], bytewise: bool) -> list:
    for wire in wires:
        for piece in (wire[i : i + 1] for i in range(len(wire))) if bytewise else (wire,):
            link.receive_data(piece)
    events = []
    while (event := link.next_event()) is not None:
        events.append(event)
    return [FileChunk(e.path, bytes(e.data)) if isinstance(e, FileChunk) else e for e in events]


def _whole(end: tuple[bytes, str | None]) -> bytes:
    frame, why = end
    assert why is None  # the file went out whole, not given up
    return frame


def _roles(key: str) -> dict[str, live.Role]:
    """A side's VRRP roles as the vectors give them."""
    return {n: live.Role(v["role"], v["since"]) for n, v in V[key].items()}


def _types(direction: str, start: int, end: int) -> list[str]:
    """The vectors' frame types at these positions of a direction (for messages)."""
    return [f["type"] for f in V["frames"] if f["dir"] == direction][start:end]


@pytest.mark.parametrize("bytewise", [False, True], ids=["frames", "bytes"])
def test_both_links_make_and_read_the_vectors_byte_for_byte(bytewise):
    i = LiveLink(lambda p: True, 1 << 20, live.link_keys(PSK, True, HELLO_I, HELLO_R, SECRET_I))
    r = LiveLink(lambda p: True, 1 << 20, live.link_keys(PSK, False, HELLO_R, HELLO_I, SECRET_R))
    sent = {"i2r": [], "r2i": []}

    def step(i_frames, r_frames, i_expects, r_expects):
        """Each side sends its frames; each reads the other's as the vectors say."""
        n_i, n_r = len(sent["i2r"]), len(sent["r2i"])
        sent["i2r"] += i_frames
        sent["r2i"] += r_frames
        assert sent["i2r"] == WIRE["i2r"][: len(sent["i2r"])], _types("i2r", n_i, len(sent["i2r"]))
        assert sent["r2i"] == WIRE["r2i"][: len(sent["r2i"])], _types("r2i", n_r, len(sent["r2i"]))
        assert _events(r, WIRE["i2r"][n_i : len(sent["i2r"])], bytewise) == r_expects
        assert _events(i, WIRE["r2i"][n_r : len(sent["r2i"])], bytewise) == i_expects

    firewall, network, dhcp, system = (
        _record(p) for p in ("firewall", "network", "dhcp", "system")
    )
    step([i.start()], [r.start()], [Authenticated()], [Authenticated()])
    step(
        [
            *i.state([firewall, network]),
            i.index_end(0, False),
            i.peers_frame([V["node_r"], V["node_c"]]),
            i.vrrp_frame(_roles("vrrp_i")),
        ],
        [
            *r.state([dhcp, system]),
            r.index_end(0, False),
            r.peers_frame([V["node_i"]]),
            r.vrrp_frame(_roles("vrrp_r")),
        ],
        [
            Records((dhcp, system)),
            IndexEnd(0, False),
            PeersChanged(frozenset([V["node_i"]])),
            RolesChanged(_roles("vrrp_r")),
        ],
        [
            Records((firewall, network)),
            IndexEnd(0, False),
            PeersChanged(frozenset([V["node_r"], V["node_c"]])),
            RolesChanged(_roles("vrrp_i")),
        ],
    )
    step(
        [*i.request(["dhcp", "system"])],
        [*r.request(["firewall"])],
        [Requested(("firewall",))],
        [Requested(("dhcp", "system"))],
    )
    cut = (
        len(next(f for f in V["frames"] if f["dir"] == "r2i" and f["type"] == "CHUNK")["plaintext"])
        // 2
    )
    fw, dh = _content("firewall"), _content("dhcp")
    step(
        [i.file_start(firewall, 0o100644), i.file_chunk(fw), _whole(i.file_end())],
        [
            r.file_start(dhcp, 0o100644),
            r.file_chunk(dh[:cut]),
            r.file_chunk(dh[cut:]),
            _whole(r.file_end()),
            r.skip("system", "deleted meanwhile"),
        ],
        [
            FileStart(dhcp),
            FileChunk("dhcp", dh[:cut]),
            FileChunk("dhcp", dh[cut:]),
            FileDone(dhcp),
            Skipped("system", "deleted meanwhile"),
        ],
        [FileStart(firewall), FileChunk("firewall", fw), FileDone(firewall)],
    )
    step([i.ack(0)], [r.ack(0)], [Acked(0)], [Acked(0)])
    step(
        [i.rekey(), i.ping(), i.bye(V["bye_i"])],
        [r.rekey(), r.ping(), r.bye(V["bye_r"])],
        [Bye(V["bye_r"])],
        [Bye(V["bye_i"])],
    )
    assert sent == WIRE  # every frame of the vectors, nothing more
    i.connection_closed()
    r.connection_closed()
