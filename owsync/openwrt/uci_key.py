"""A key set in UCI moves to the key file as the daemon reads it.

``uci set owsync.main.key=...; uci commit owsync`` puts the pre-shared key
where every LuCI reader can see it (LuCI reads a UCI package whole).  The
daemon, which reads UCI anyway, writes such a key to the root-only key file
(atomically, mode 0600) and deletes the option from ``/etc/config/owsync``.

The deletion touches that option and nothing else: the package is loaded by
its path, which libuci treats as a file of its own, without the change files
(deltas) where ``uci set`` without a commit, and LuCI, stage their changes;
its save then writes that file directly.  So what an admin has staged and not
applied stays staged, and is not committed behind their back (which a plain
``uci commit owsync`` would do).
"""

from __future__ import annotations

import os

from ..core.crypto import parse_key
from .rpcd_key import write_key
from .uci_config import DEFAULT_UCI_DIR, PACKAGE, SECTION


def move_key_out_of_uci(confdir: str | None, key_file: str) -> str | None:
    """Move ``owsync.main.key`` from the committed file to ``key_file``.

    Returns what it did, for the log: None when there is no key in the file
    or it is not a valid key (the configuration's validation says why; a typo
    never replaces the key in use).  OSError when the key file cannot be
    written (the key then stays in UCI); UciException when UCI cannot be
    written after the key file was (the key is in both then, and moves again
    at the next reload).
    """
    import uci  # lazy: optional binding, absent off OpenWrt (as in uci_config)

    path = os.path.join(os.path.abspath(confdir or DEFAULT_UCI_DIR), PACKAGE)
    try:
        text = uci.Uci(confdir=os.path.dirname(path)).get(path, SECTION, "key")
    except uci.UciExceptionNotFound:
        return None
    if not isinstance(text, str):
        return None
    try:
        key = parse_key(text.strip())
    except ValueError:
        return None
    write_key(key_file, key.hex())
    # a context of its own: the package by its path, nothing else loaded
    u = uci.Uci(confdir=os.path.dirname(path))
    u.delete(path, SECTION, "key")
    u.commit(PACKAGE)
    return f"the key moved from UCI to {key_file}"
