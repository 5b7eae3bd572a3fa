"""File records and the state transitions of the local database.

Pure code, no I/O.  A :class:`Record` is what a node knows of one path: the
content's SHA-256, the millisecond mtime of the write that produced it, size,
permission bits, and whether it is a tombstone.  The scanner and the session
call the functions below to move records from one state to the next.
"""

from __future__ import annotations

import json
from collections import namedtuple

TOMBSTONE_TTL_MS = 30 * 24 * 3600 * 1000

# What the scanner saw of a file on disk: (size, mtime_ns, ctime_ns, inode).
# Equal signatures mean the content need not be hashed again.
Signature = tuple[int, int, int, int]


_RecordBase = namedtuple("Record", "path hash mtime size mode deleted sig", defaults=(False, None))


class Record(_RecordBase):
    """What a node knows of one path (a tuple: cheap to make, compare and keep).

    ``path``; ``hash``, SHA-256 hex of the content or None for a tombstone;
    ``mtime``, milliseconds since the epoch of the write; ``size``; ``mode``
    (permission bits); ``deleted``; ``sig``, the scanner's Signature of the
    file, local only and never on the wire.

    A tombstone with a ``sig`` is a deletion under way: a peer's, recorded
    before its file (with that signature) is removed, so that a crash in
    between neither takes the missing file for a deletion made here nor the
    file still there for a re-creation (see :func:`pending_deletion`).
    """

    __slots__ = ()

    def same_version(self, other: Record) -> bool:
        """True when both describe the same version (ignoring local caches)."""
        return self[1:6] == other[1:6]


def observe_file(
    prev: Record | None, path: str, digest: str, size: int, mode: int, mtime_ms: int, sig: Signature
) -> Record:
    """The record for a regular file the scanner found on disk.

    Unchanged content keeps the version it had (a touch is not a write).  New
    content takes the file's mtime, but never a time at or before the version
    it replaced: a local write always supersedes what the node had seen, even
    when a tool preserved an old mtime (``cp -p``, restores).
    """
    if prev is not None and not prev.deleted and prev.hash == digest:
        return prev._replace(size=size, mode=mode, sig=sig)
    if prev is not None and mtime_ms <= prev.mtime:
        mtime_ms = prev.mtime + 1
    return Record(path, digest, mtime_ms, size, mode, False, sig)


def tombstone(prev: Record, mtime_ms: int) -> Record:
    """A tombstone replacing ``prev``, stamped ``mtime_ms``."""
    return Record(prev.path, None, mtime_ms, 0, prev.mode, True, None)


def reconcile(
    records: dict[str, Record],
    seen: dict[str, Record],
    in_scope,
    keep: set[str],
    now_ms: int,
) -> dict[str, Record]:
    """The database after a scan.

    ``seen`` holds the records of the files found on disk; ``in_scope(path)``
    says whether a known path is one the scan looked for (it passes the
    filter); ``keep`` lists paths whose file could not be read this time.  A
    path known live, in scope, and no longer on disk becomes a tombstone
    stamped with the scan time, or just after the version it deletes when that
    is later (a file whose mtime lies ahead of this clock must still be
    deletable: a tombstone older than it would lose to it everywhere);
    tombstones older than 30 days are dropped.
    Records outside the scope are kept as they are.
    """
    out: dict[str, Record] = {}
    for path, rec in records.items():
        if path in seen:
            continue
        if rec.deleted:
            if now_ms - rec.mtime <= TOMBSTONE_TTL_MS:
                # a deletion under way whose file is gone is done
                out[path] = rec if rec.sig is None else rec._replace(sig=None)
        elif path in keep or not in_scope(path):
            out[path] = rec
        else:
            out[path] = tombstone(rec, max(now_ms, rec.mtime + 1))
    out.update(seen)
    return out


def received(remote: Record, sig: Signature | None) -> Record:
    """The local record after a peer's version was written: its version, kept."""
    return Record(remote.path, remote.hash, remote.mtime, remote.size, remote.mode, False, sig)


def deleted_by_peer(local: Record, remote: Record) -> Record:
    """The local record after a peer's tombstone was applied.

    The tombstone keeps the peer's mtime: re-stamping it with the local clock
    (as 1.2.0 does) makes a deletion look newer than a later re-creation.
    """
    return tombstone(local, remote.mtime)


def pending_deletion(local: Record, remote: Record) -> Record:
    """The peer's tombstone, recorded before its file is removed: it carries
    the signature of the file to remove.  The scanner completes it when it
    finds that very file (the removal never happened), and takes any other
    file there for a re-creation made after it."""
    return deleted_by_peer(local, remote)._replace(sig=local.sig)


# --- database format (owsync 1.2.0's JSON, plus our own "sig") ----------------


def _entry(r: Record) -> dict:
    entry = {
        "hash": r.hash,
        "mtime": float(r.mtime),
        "size": float(r.size),
        "mode": r.mode,
        "deleted": r.deleted,
    }
    if r.sig is not None:
        entry["sig"] = list(r.sig)
    return entry


def dumps_db(records: dict[str, Record], root: str | None = None, gen: str | None = None) -> bytes:
    """The database file; ``root`` (our own field) names the directory it
    describes, ``gen`` (ours too) the generation its journal extends."""
    doc: dict = {"files": {path: _entry(r) for path, r in records.items()}}
    if root is not None:
        doc["root"] = root
    if gen is not None:
        doc["gen"] = gen
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def dumps_journal(gen: str, records: list[Record]) -> bytes:
    """Journal lines: each record changed since the database of generation
    ``gen`` was written, one JSON object a line."""
    out = []
    for r in records:
        entry = _entry(r)
        entry["path"], entry["gen"] = r.path, gen
        out.append(json.dumps(entry, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode("utf-8")


def replay_journal(records: dict[str, Record], gen: str | None, data: bytes) -> int:
    """Apply the journal lines of generation ``gen`` to ``records`` (in place);
    lines of another generation (a database saved since) are skipped, and so
    is a torn last line (a crash during its write).  Returns the lines applied."""
    lines = data.split(b"\n")
    n = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            if e.get("gen") != gen or gen is None:
                continue
            rec = _record(e["path"], e)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            if i == len(lines) - 1 or (i == len(lines) - 2 and not lines[-1]):
                break  # the last line, torn
            raise CorruptDatabase(f"journal line {i + 1}: {exc}") from None
        records[rec.path] = rec
        n += 1
    return n


def _record(path: str, e: dict) -> Record:
    """One entry of the database or its journal (a tombstone with a sig: a
    deletion under way)."""
    if type(path) is not str:
        raise TypeError("path is not a string")
    sig = e.get("sig")
    if sig is not None:
        sig = tuple(map(int, sig)) if len(sig) == 4 else None
    if e["deleted"]:
        return Record(path, None, int(e["mtime"]), int(e["size"]),
                      int(e["mode"]) & 0o777, True, sig)  # fmt: skip
    h = e["hash"]
    if type(h) is not str or len(h) != 64:
        raise ValueError(f"bad hash for {path!r}")
    return Record(path, h, int(e["mtime"]), int(e["size"]), int(e["mode"]) & 0o777, False, sig)


class CorruptDatabase(ValueError):
    pass


def loads_db(data: bytes) -> dict[str, Record]:
    return loads_db_root(data)[0]


def loads_db_root(data: bytes) -> tuple[dict[str, Record], str | None]:
    """Parse a database: its records and the directory it describes, if it says."""
    records, root, _ = loads_db_doc(data)
    return records, root


def loads_db_doc(data: bytes) -> tuple[dict[str, Record], str | None, str | None]:
    """Parse a database: its records, the directory it describes and its
    generation, where it says.

    Raises CorruptDatabase on anything malformed.  This runs at the start of
    every session over every record, so it stays lean.
    """
    try:
        doc = json.loads(data)
        files = doc["files"]
        root = doc.get("root")
        if root is not None and not isinstance(root, str):
            raise TypeError("root is not a string")
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
        out = {path: _record(path, e) for path, e in files.items()}
        gen = doc.get("gen")
        return out, root, gen if isinstance(gen, str) else None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise CorruptDatabase(str(exc) or exc.__class__.__name__) from None
