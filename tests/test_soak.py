"""The soak of bench/soak.py in its CI setting: two daemons under steady churn for
OWSYNC_SOAK_SECONDS (default 20 s; by hand, the long setting: 3600) keep their
descriptors, threads and memory flat, and converge on every last write.

The bounds are generous, to catch a leak and never a wobble: the churn makes
about two sessions per change (the push, then the receiver's sync back), some
200 in 20 s, so a descriptor or a thread left behind per session shows as
hundreds; the interpreter's allocator moves RSS by a few MiB at most.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # noqa: E402 - bench/ is not a package

SECONDS = float(os.environ.get("OWSYNC_SOAK_SECONDS", "20"))
MIB = 1024


def test_soak_keeps_fds_threads_and_memory_flat(tmp_path):
    warmup = min(120.0, max(5.0, SECONDS * 0.1))
    r = soak.run_soak(duration=SECONDS + warmup, rate=5.0, warmup=warmup, work=tmp_path)
    print(soak.table(r))  # shown with -s or on failure
    assert r["converged"], r["differences"]
    # enough work for a per-change leak to show: sessions, or a live link's updates
    # (each change is sent to the other daemon once)
    assert r["sessions"] >= 8 * SECONDS or r["updates"] >= 2 * SECONDS, r
    for name, d in r["daemons"].items():
        fds, threads, rss = d["fds"], d["threads"], d["rss_kib"]
        assert fds["end"] <= fds["start"] + 2, (name, fds)
        assert threads["end"] <= threads["start"] + 2, (name, threads)
        assert rss["end"] - rss["start"] < 8 * MIB, (name, rss)
        assert d["exit"] == 0, (name, d)
