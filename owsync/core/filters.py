"""Glob include/exclude filters with owsync 1.2.0's semantics.

Patterns match the whole relative path as fnmatch(3) with no flags does:
``*`` also matches ``/``, matching is case-sensitive, excludes win over
includes, and with no include pattern nothing passes.

Two questions about the patterns themselves are answered here too, without
any disk: which directories can hold a path the includes match
(:meth:`Filter.may_hold`: the scanner walks and the watcher watches only
those), and whether two filters can accept one same path
(:func:`common_path`: two sync groups must never both own a path).
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import string
from collections.abc import Iterable, Sequence

from .paths import is_hidden, path_problem

_WILD = "*?["


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.DOTALL)


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """The part of ``pattern`` before its first wildcard, and whether it has one."""
    for i, c in enumerate(pattern):
        if c in _WILD:
            return pattern[:i], True
    return pattern, False


class Filter:
    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._inc = _compile(self.include)
        self._exc = _compile(self.exclude)
        prefixes = [literal_prefix(p) for p in self.include]
        # a pattern that starts with a wildcard ('*', '*.crt') can match at
        # any depth below any directory (fnmatch's '*' and '?' match '/')
        self.whole_tree = any(wild and not prefix for prefix, wild in prefixes)
        self._prefixes = tuple(prefixes)

    def __call__(self, path: str) -> bool:
        if self._inc is None or not self._inc.match(path):
            return False
        return self._exc is None or not self._exc.match(path)

    @property
    def empty(self) -> bool:
        return not self.include

    def outside(self, prefix: str) -> Filter:
        """This filter, also refusing every path under ``prefix`` ('a/b/':
        owsync's own directory inside the tree), with the same answers to
        :meth:`may_hold` (the patterns compiled once, shared)."""
        return _Outside(self, prefix)

    def may_hold(self, rel_dir: str) -> bool:
        """Whether directory ``rel_dir`` (relative, ending in '/') can hold, at
        any depth, a path that an include pattern matches.

        A pattern without wildcard names one path: its parent directories
        only.  One with a wildcard matches only paths that start with its
        literal part (what comes before the first wildcard), and past it a
        wildcard may cross '/': the directories on the way to that literal
        part, and every directory below where it can continue.  So ``passwd``
        needs the top level only, ``dropbear/*`` the tree of ``dropbear``,
        ``*.crt`` everything.  Conservative: every directory that holds a
        matching path is said to, perhaps some more.  Excludes are not
        considered (an excluded directory costs a walk, never a miss).
        """
        if self.whole_tree:
            return True
        for prefix, wild in self._prefixes:
            if prefix.startswith(rel_dir):  # on the way to the literal part
                if wild or len(prefix) > len(rel_dir):
                    return True
            elif wild and rel_dir.startswith(prefix):
                return True
        return False


class _Outside(Filter):
    def __init__(self, base: Filter, prefix: str) -> None:
        self.__dict__.update(base.__dict__)
        self.prefix = prefix

    def __call__(self, path: str) -> bool:
        return not path.startswith(self.prefix) and Filter.__call__(self, path)


# --- whether two filters can accept one same path --------------------------------------

# A token of a glob: a literal character (str of length 1), ANY ('?'), STAR ('*'), or
# a class: (negated, ranges).
_STAR = ("*",)
_ANY = ("?",)
_POOL = string.ascii_letters + string.digits + "_-.~@+=,:%/ " + "\u00e9\u2603"


def _tokens(pattern: str) -> list:
    """The glob as fnmatch.translate reads it."""
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif c == "?":
            out.append(_ANY)
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("[")  # no closing bracket: a literal '['
                continue
            body = pattern[i:j]
            i = j + 1
            negated = body.startswith("!")
            if negated:
                body = body[1:]
            ranges = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    if body[k] <= body[k + 2]:
                        ranges.append((body[k], body[k + 2]))
                    k += 3
                else:
                    ranges.append((body[k], body[k]))
                    k += 1
            out.append((negated, tuple(ranges)))
        else:
            out.append(c)
    return out


def _in(token, c: str) -> bool:
    if isinstance(token, str):
        return c == token
    if token is _ANY:
        return True
    negated, ranges = token
    return any(lo <= c <= hi for lo, hi in ranges) != negated


def _candidates(token) -> Iterable[str]:
    if isinstance(token, str):
        return (token,)
    if token is _ANY:
        return _POOL
    _, ranges = token
    return [c for lo, hi in ranges for c in (lo, hi)] + list(_POOL)


def _chars(state: int, *tokens) -> list[str]:
    """The characters to try where ``tokens`` each match one: one that is
    not '/', and '/' (they lead to different states), each only where a
    syncable path can have it (never '/' or '.' to begin a name)."""
    out = []
    for c in itertools.chain.from_iterable(_candidates(t) for t in tokens):
        if c != "/" and (state == _INSIDE or c != ".") and all(_in(t, c) for t in tokens):
            out.append(c)
            break
    if state == _INSIDE and all(_in(t, "/") for t in tokens):
        out.append("/")
    return out


_BOUNDARY, _INSIDE = 0, 1  # at the start of a name (or of the path), or inside one


def _after(state: int, text: str) -> int:
    return state if not text else _BOUNDARY if text.endswith("/") else _INSIDE


def _witness(t1: list, t2: list, filler: str) -> str | None:
    """A syncable path (no empty, '.' or hidden name, not absolute) that both
    token lists match, None when there is none; ``filler`` where both
    patterns are free (two '*' at once)."""
    memo: dict[tuple[int, int, int], str | None] = {}
    n1, n2 = len(t1), len(t2)

    def f(i: int, j: int, state: int) -> str | None:
        key = (i, j, state)
        if key in memo:
            return memo[key]
        a = t1[i] if i < n1 else None
        b = t2[j] if j < n2 else None
        r: str | None = None
        if a is None and b is None:
            r = "" if state == _INSIDE else None
        elif a is _STAR and b is _STAR:  # both free: the filler, then either goes on
            s = _after(state, filler)
            r = _cat(filler, _first(f(i + 1, j + 1, s), f(i + 1, j, s), f(i, j + 1, s)))
            if r is None and filler:
                r = _first(f(i + 1, j, state), f(i, j + 1, state))
        elif a is _STAR or b is _STAR:
            # the star ends here, or takes the character the other's token gives
            ends = f(i + 1, j, state) if a is _STAR else f(i, j + 1, state)
            r = ends
            other = b if a is _STAR else a
            if r is None and other is not None:
                for c in _chars(state, other):
                    nxt = (i, j + 1) if a is _STAR else (i + 1, j)
                    r = _cat(c, f(*nxt, _after(state, c)))
                    if r is not None:
                        break
        elif a is not None and b is not None:
            for c in _chars(state, a, b):
                r = _cat(c, f(i + 1, j + 1, _after(state, c)))
                if r is not None:
                    break
        memo[key] = r
        return r

    return f(0, 0, _BOUNDARY)


def _cat(head: str, tail: str | None) -> str | None:
    return None if tail is None else head + tail


def _first(*options: str | None) -> str | None:
    return next((o for o in options if o is not None), None)


_FILLERS = ("x", "", "x/y", "0", "zz/zz/zz")


def common_path(outer: Filter, inner: Filter, prefix: str = "") -> str | None:
    """A path (relative to ``outer``'s directory) that both filters accept,
    where ``inner`` sits in ``outer``'s directory ``prefix`` ('' the same
    directory, else 'a/b/'); None when none was found.

    For each pair of include patterns the shortest strings both can match
    are built (a few fillers where both are free) and tried against the
    whole filters, excludes and dot-files included.  Two include patterns
    that can match one common path but whose every such example is
    excluded on one side are taken as not overlapping: the examples are
    where an exclude would have to reach.
    """
    for pa in outer.include:
        ta = _tokens(pa)
        for pb in inner.include:
            tb = list(prefix) + _tokens(pb)
            for filler in _FILLERS:
                w = _witness(ta, tb, filler)
                if w is None:
                    break  # no common string at all
                rel = w[len(prefix) :]
                if _syncable(w) and outer(w) and inner(rel):
                    return w
    return None


def _syncable(path: str) -> bool:
    return path_problem(path) is None and not is_hidden(path)
