"""A peer's address as configured: ``host``, ``host:port``, ``[v6]:port``, with a source."""

from __future__ import annotations

from typing import NamedTuple


class Peer(NamedTuple):
    """A peer: ``host``, ``port`` (None: the configured one), ``source`` (a local
    address to bind before connecting), ``text`` (as written: its name in logs)."""

    host: str
    port: int | None = None
    source: str | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.host


def parse_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: junk after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None  # a name, IPv4, or a bare IPv6 address
    if not host:
        raise ValueError(f"{text!r}: empty host")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: port must be 1..65535")
        port = int(port_text)
    return host, port


def parse_peer(text: str) -> Peer:
    """``addr`` or ``addr,source_addr``."""
    addr, _, source_text = text.strip().partition(",")
    host, port = parse_hostport(addr)
    source = source_text.strip() or None
    if "," in text and source is None:
        raise ValueError(f"{text!r}: empty source address after ','")
    return Peer(host, port, source, text.strip())
