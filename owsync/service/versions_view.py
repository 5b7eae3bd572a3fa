"""The version store as the control surfaces show it (CLI, control socket, ubus).

Reading only: a listing, a diff against the current file, recent conflicts.
Restoring writes to the sync directory, so it is the engine's (under the
directory lock): see :func:`owsync.engine.restore`.
"""

from __future__ import annotations

import time

from ..io.syncdir import SyncDir, UnsafePath
from ..io.versions import VersionStore

MAX_DIFF = 64 * 1024  # characters of a diff handed to a surface
MAX_LISTED = 500


def open_store(cfg, full: bool = True) -> VersionStore:
    """The store of ``cfg`` for reading (never tidied: its writer may be busy)."""
    if full:
        return VersionStore.open(cfg.versions_path(), cfg.versions_limits(), tidy=False)
    return VersionStore.index_only(cfg.versions_path(), cfg.versions_limits())


def listing(cfg, path: str | None = None) -> dict:
    store = open_store(cfg)
    kept = store.listing(path)
    return {"versions": kept[:MAX_LISTED], "total": len(kept), "store": store.summary()}


def recent_conflicts(cfg, n: int = 10) -> list[dict]:
    if cfg.versions_keep <= 0:
        return []
    store = open_store(cfg, full=False)
    out = [v for v in store.listing() if v["reason"] == "conflict"][:n]
    return [{k: v[k] for k in ("id", "path", "peer", "kept")} for v in out]


def diff(cfg, version_id: int) -> dict:
    """A unified diff from a kept version to the current file (text files)."""
    import difflib  # lazy, for memory: only a diff needs it, never an idle daemon

    store = open_store(cfg)
    v = store.find(version_id)
    if v is None:
        raise LookupError(f"no version {version_id}")
    out = {"id": version_id, "path": v["path"], "text": v["text"], "current": "absent",
           "diff": "", "truncated": False}  # fmt: skip
    try:
        with SyncDir(cfg.sync_dir) as d:
            current, _ = d.read(v["path"])
        out["current"] = "present"
    except (FileNotFoundError, NotADirectoryError):
        current = b""
    except (OSError, UnsafePath):
        out["current"] = "unreadable"
        return out
    if not v["text"]:
        return out
    try:
        old = store.read(v["hash"]).decode("utf-8", "replace").splitlines(keepends=True)
    except OSError:
        raise LookupError(f"version {version_id}: its content is gone") from None
    new = current.decode("utf-8", "replace").splitlines(keepends=True)
    text = "".join(
        difflib.unified_diff(
            old, new, f"{v['path']} (version {version_id})", f"{v['path']} (now)", n=3
        )
    )
    if len(text) > MAX_DIFF:
        out["truncated"] = True
        text = text[:MAX_DIFF]
    out["diff"] = text
    return out


def format_listing(entries: list[dict]) -> str:
    """The table `owsync versions` prints."""
    if not entries:
        return "no versions kept\n"
    lines = [f"{'ID':>5}  {'KEPT':19}  {'WHAT':9}  {'BY':21}  {'SIZE':>8}  PATH"]
    for v in entries:
        kept = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["kept"] / 1000))
        by = v["peer"] or "this node"
        lines.append(
            f"{v['id']:>5}  {kept:19}  {v['reason']:9}  {by:21}  {v['size']:>8}  {v['path']}"
        )
    return "\n".join(lines) + "\n"
