"""The version stores as the control surfaces show them (CLI, control socket, ubus).

Reading only: a listing, a diff against the current file, recent conflicts.
Restoring writes to the sync directory, so it is the engine's (under the
directory lock): see :func:`owsync.engine.restore`.

Each sync group keeps its own store, whose ids are its own: a version is
named by its group and its id, ``"GROUP:ID"`` (:func:`ref`), or its id
alone for the main group, as before groups.  Every listed entry carries its
``group``.
"""

from __future__ import annotations

import time

from ..io.syncdir import SyncDir, UnsafePath
from ..io.versions import VersionStore
from .config import MAIN, Config, Group

MAX_DIFF = 64 * 1024  # characters of a diff handed to a surface
MAX_LISTED = 500


def open_store(cfg: Config, full: bool = True, group: str = MAIN) -> VersionStore:
    """The store of one group of ``cfg`` for reading (never tidied: its writer may be busy)."""
    path = cfg.group_versions_path(group)
    if full:
        return VersionStore.open(path, cfg.versions_limits(), tidy=False)
    return VersionStore.index_only(path, cfg.versions_limits())


def ref(group: str, version_id: int) -> int | str:
    """How a surface names a version: its id in main, ``"GROUP:ID"`` elsewhere."""
    return version_id if group == MAIN else f"{group}:{version_id}"


def parse_ref(value: object) -> tuple[str, int]:
    """(group, id) of ``5``, ``"5"`` or ``"dropbear:5"``; ValueError, saying
    what a version is, for anything else."""
    if type(value) is int and value >= 0:
        return MAIN, value
    if isinstance(value, str):
        group, colon, number = value.strip().rpartition(":")
        if number.isdigit() and number.isascii() and (not colon or group):
            return (group if colon else MAIN), int(number, 10)
    raise ValueError(
        f"{value!r} is not a version: its number, or GROUP:NUMBER in a group other than"
        " main (owsync versions lists them)"
    )


def find_group(cfg: Config, name: str) -> Group:
    """The group called ``name``; LookupError when the configuration has none."""
    for g in cfg.all_groups():
        if g.name == name:
            return g
    raise LookupError(f"no group {name!r} in the configuration")


def listing(cfg: Config, path: str | None = None, group: str | None = None) -> dict:
    """Every group's kept versions (or one group's), newest first, each with its
    ``group``; ``store`` is main's summary, ``stores`` every listed group's."""
    kept: list[dict] = []
    stores = {}
    for g in cfg.all_groups():
        if group is not None and g.name != group:
            continue
        store = open_store(cfg, group=g.name)
        kept += [{**v, "group": g.name} for v in store.listing(path)]
        stores[g.name] = store.summary()
    kept.sort(key=lambda v: v["kept"], reverse=True)  # stable: each store's own order kept
    main = stores.get(MAIN) or open_store(cfg, full=False).summary()
    return {"versions": kept[:MAX_LISTED], "total": len(kept), "store": main, "stores": stores}


def recent_conflicts(cfg: Config, n: int = 10) -> list[dict]:
    if cfg.versions_keep <= 0:
        return []
    store = open_store(cfg, full=False)
    out = [v for v in store.listing() if v["reason"] == "conflict"][:n]
    return [{k: v[k] for k in ("id", "path", "peer", "kept")} for v in out]


def diff(cfg: Config, version: int | str) -> dict:
    """A unified diff from a kept version (an id, or GROUP:ID) to the current file
    (text files).  ValueError for a malformed reference, LookupError for none."""
    import difflib  # lazy, for memory: only a diff needs it, never an idle daemon

    name, version_id = parse_ref(version)
    group = find_group(cfg, name)
    store = open_store(cfg, group=name)
    v = store.find(version_id)
    label = ref(name, version_id)
    if v is None:
        raise LookupError(f"no version {label}")
    out = {"id": version_id, "group": name, "path": v["path"], "text": v["text"],
           "current": "absent", "diff": "", "truncated": False}  # fmt: skip
    try:
        with SyncDir(group.sync_dir) as d:
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
        raise LookupError(f"version {label}: its content is gone") from None
    new = current.decode("utf-8", "replace").splitlines(keepends=True)
    text = "".join(
        difflib.unified_diff(old, new, f"{v['path']} (version {label})", f"{v['path']} (now)", n=3)
    )
    if len(text) > MAX_DIFF:
        out["truncated"] = True
        text = text[:MAX_DIFF]
    out["diff"] = text
    return out


def format_listing(entries: list[dict]) -> str:
    """The table `owsync versions` prints: the ID column is what diff and
    restore take (GROUP:ID outside main), GROUP the group the file is in."""
    if not entries:
        return "no versions kept\n"
    ids = [str(ref(v.get("group", MAIN), v["id"])) for v in entries]
    width = max(5, *map(len, ids))
    gwidth = max(5, *(len(v.get("group", MAIN)) for v in entries))
    lines = [f"{'ID':>{width}}  {'GROUP':{gwidth}}  {'KEPT':19}  {'WHAT':9}  {'BY':21}"
             f"  {'SIZE':>8}  PATH"]  # fmt: skip
    for vid, v in zip(ids, entries, strict=True):
        kept = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["kept"] / 1000))
        by = v["peer"] or "this node"
        lines.append(
            f"{vid:>{width}}  {v.get('group', MAIN):{gwidth}}  {kept:19}  {v['reason']:9}"
            f"  {by:21}  {v['size']:>8}  {v['path']}"
        )
    return "\n".join(lines) + "\n"
