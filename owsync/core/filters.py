"""Glob include/exclude filters with owsync 1.2.0's semantics.

Patterns match the whole relative path as fnmatch(3) with no flags does:
``*`` also matches ``/``, matching is case-sensitive, excludes win over
includes, and with no include pattern nothing passes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.DOTALL)


class Filter:
    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._inc = _compile(self.include)
        self._exc = _compile(self.exclude)

    def __call__(self, path: str) -> bool:
        if self._inc is None or not self._inc.match(path):
            return False
        return self._exc is None or not self._exc.match(path)

    @property
    def empty(self) -> bool:
        return not self.include
