"""A key set in UCI moves to the key file as the daemon reads it.

``uci set owsync.main.key=...; uci commit owsync`` puts the pre-shared key
where every LuCI reader can see it (LuCI reads a UCI package whole).  The
daemon, which reads UCI anyway, writes such a key to the root-only key file
(atomically, mode 0600) and deletes the option from ``/etc/config/owsync``.

The deletion touches that option and nothing else: the package is loaded by
its path, which libuci treats as a file of its own, without the change files
(deltas) in which ``uci set`` without a commit stages its changes; its save
then writes that file directly.  So what an admin has staged and not applied
stays staged, and is not committed behind their back, as a plain ``uci
commit owsync`` would do.  (Between the read and the write another commit
could slip in and be lost; the window is that of one small file's rewrite.)
"""

from __future__ import annotations

import contextlib
import os

from ..core.crypto import parse_key
from ..service.config import ConfigError
from .uci_config import DEFAULT_UCI_DIR, PACKAGE, SECTION, UCI_DIR_ENV


def write_key(path: str, text: str) -> None:
    """Replace the key file atomically; it is born 0600 and reaches the disk first."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def move_key_out_of_uci(confdir: str | None, key_file: str) -> str | None:
    """Move ``owsync.main.key`` from the committed file to ``key_file``.

    Returns what it did, for the log; None when the file holds no key, or
    one that is not a key (the configuration's validation says why, and a
    typo never replaces the key in use).  ConfigError, in one line, when the
    key file cannot be written (the key then stays in UCI), or UCI cannot be
    written after it (the key is in both, and moves at the next reload).
    """
    import uci  # lazy: optional binding, absent off OpenWrt (as in uci_config)

    confdir = os.path.abspath(confdir or os.environ.get(UCI_DIR_ENV) or DEFAULT_UCI_DIR)
    path = os.path.join(confdir, PACKAGE)
    try:
        text = uci.Uci(confdir=confdir).get(path, SECTION, "key")
    except uci.UciExceptionNotFound:
        return None
    except uci.UciException as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        key = parse_key(text.strip() if isinstance(text, str) else "")
    except ValueError:
        return None
    try:
        write_key(key_file, key.hex())
    except OSError as exc:
        raise ConfigError(f"cannot write {key_file}: {exc.strerror or exc}") from None
    why = "still there after the commit"  # pyuci's commit reports no failure: look
    try:
        u = uci.Uci(confdir=confdir)  # a context of its own: this one file, nothing else
        u.delete(path, SECTION, "key")
        u.commit(PACKAGE)
        uci.Uci(confdir=confdir).get(path, SECTION, "key")
    except uci.UciExceptionNotFound:
        return f"the key moved from UCI to {key_file}"
    except uci.UciException as exc:
        why = str(exc) or type(exc).__name__
    raise ConfigError(f"cannot delete owsync.main.key from {path}: {why}")
