"""Relative path rules, shared by everything that takes a path from a peer.

Pure code: the checks that need the disk (symlinked directories) are done by
:mod:`owsync.syncdir` while it walks a path.
"""

from __future__ import annotations

MAX_PATH = 4096
MAX_NAME = 255


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative path, or None when it is."""
    if not path:
        return "empty path"
    if "\0" in path:
        return "NUL in path"
    if path.startswith("/"):
        return "absolute path"
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not UTF-8"
    if len(raw) > MAX_PATH:
        return "path too long"
    for part in path.split("/"):
        if part == "..":
            return "'..' in path"
        if part in ("", "."):
            return "empty or '.' segment in path"
        if len(part.encode("utf-8")) > MAX_NAME:
            return "name too long"
    return None


def is_hidden(path: str) -> bool:
    """Dot-file policy: a path with any component starting with '.' is not synced."""
    return path.startswith(".") or "/." in path
