"""Sync groups on the wire against fixed vectors from an independent implementation.

tests/vectors/groups/generate.py derives them from docs/PROTOCOL.md alone (it
imports nothing from owsync): a Hello naming a group and its echo, for a v2
session and a live link, their keys, and the responder's "no such group"
ERROR.  owsync must make the same bytes and read them as what they stand for.
"""

from __future__ import annotations

import json
import os

import pytest

from owsync.core import live, protocol2
from owsync.core.live import LiveLink
from owsync.core.protocol import Hello, ProtocolError
from owsync.core.session2 import Session2

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "vectors", "groups", "groups.json"), encoding="utf-8") as _f:
    V = json.load(_f)
PSK = bytes.fromhex(V["psk"])
GROUP = V["group"]
NONCE_I, NONCE_R = bytes.fromhex(V["nonce_i"]), bytes.fromhex(V["nonce_r"])
HELLO_I, HELLO_R = V["hello_i"].encode(), V["hello_r"].encode()
L = V["live"]
LIVE_I, LIVE_R = L["hello_i"].encode(), L["hello_r"].encode()
SECRET_I, SECRET_R = bytes.fromhex(L["x25519_secret_i"]), bytes.fromhex(L["x25519_secret_r"])


def test_a_hello_naming_a_group_and_its_echo_are_the_vectors_bytes():
    assert (
        protocol2.hello_payload(
            Hello("router-a", 1795600000.0), protocol2.advertise(NONCE_I, GROUP)
        )
        == HELLO_I
    )
    assert (
        protocol2.hello_payload(
            Hello("router-b", 1795600001.0), protocol2.advertise(NONCE_R, GROUP)
        )
        == HELLO_R
    )
    for hello, nonce, node, secret, host, ts in (
        (LIVE_I, NONCE_I, L["node_i"], SECRET_I, "router-a", 1795600000.0),
        (LIVE_R, NONCE_R, L["node_r"], SECRET_R, "router-b", 1795600001.0),
    ):
        fields = live.advertise(nonce, node, live.x25519_public(secret), L["port"], GROUP)
        assert protocol2.hello_payload(Hello(host, ts), fields) == hello


def test_main_is_never_named_so_mains_hello_is_unchanged():
    assert protocol2.advertise(NONCE_I) == protocol2.advertise(NONCE_I, "main")
    assert protocol2.advertise(NONCE_I) == {"v2": {"nonce": NONCE_I.hex()}}
    assert "group" not in live.advertise(NONCE_I, L["node_i"], None, 1, "main")["v2"]


def test_the_group_is_read_from_a_hello_and_main_when_absent():
    for hello in (HELLO_I, HELLO_R, LIVE_I, LIVE_R):
        fields = protocol2.hello_fields(hello)
        assert protocol2.peer_group(fields) == GROUP
        assert protocol2.negotiated(protocol2.advertise(NONCE_R), fields)
    assert protocol2.peer_group({"type": "Hello"}) == "main"  # 1.2.0's
    assert protocol2.peer_group({"v2": {"nonce": NONCE_I.hex()}}) == "main"
    assert live.peer_live(protocol2.hello_fields(LIVE_I)).port == L["port"]


@pytest.mark.parametrize("bad", V["malformed"], ids=repr)
def test_a_malformed_group_is_a_protocol_error(bad):
    with pytest.raises(ProtocolError, match="malformed group"):
        protocol2.peer_group({"v2": {"nonce": NONCE_I.hex(), "group": bad}})
    if isinstance(bad, str):
        with pytest.raises(ValueError):
            protocol2.advertise(NONCE_I, bad)


def test_the_keys_of_a_group_session_and_link_are_the_vectors():
    assert protocol2.transcript(HELLO_I, HELLO_R).hex() == V["transcript"]
    keys = protocol2.session_keys(PSK, True, HELLO_I, HELLO_R)
    assert (keys.send.hex(), keys.recv.hex()) == (V["k_i2r"], V["k_r2i"])
    lk = live.link_keys(PSK, False, LIVE_R, LIVE_I, SECRET_R)
    assert (lk.send.hex(), lk.recv.hex()) == (L["k_r2i"], L["k_i2r"])


def test_the_no_such_group_error_is_the_vectors_and_reads_as_absent():
    text = protocol2.no_such_group(GROUP)
    assert text == V["refusal"] and protocol2.is_no_such_group(text)
    # the responder's first frame, under v2's keys...
    r = Session2(lambda p: True, 1 << 20, protocol2.session_keys(PSK, False, HELLO_R, HELLO_I))
    assert r.error(text).hex() == V["error_r2i"]
    # ...which the initiator reads in place of the peer's AUTH, as a refusal
    i = Session2(lambda p: True, 1 << 20, protocol2.session_keys(PSK, True, HELLO_I, HELLO_R))
    i.start()
    i.receive_data(bytes.fromhex(V["error_r2i"]))
    with pytest.raises(protocol2.PeerError) as got:
        while i.next_event() is not None:
            pass
    assert protocol2.is_no_such_group(got.value.reason)
    # and the live link's
    lr = LiveLink(lambda p: True, 1 << 20, live.link_keys(PSK, False, LIVE_R, LIVE_I, SECRET_R))
    assert lr.error(text).hex() == L["error_r2i"]
    li = LiveLink(lambda p: True, 1 << 20, live.link_keys(PSK, True, LIVE_I, LIVE_R, SECRET_I))
    li.start()
    li.receive_data(bytes.fromhex(L["error_r2i"]))
    with pytest.raises(protocol2.PeerError) as got:
        while li.next_event() is not None:
            pass
    assert got.value.reason == V["refusal"]
