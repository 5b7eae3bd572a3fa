"""The long setting of the fault suites, in one command, with a summary.

    .venv/bin/python bench/long_run.py                 # the long setting (about an hour)
    .venv/bin/python bench/long_run.py --fast          # CI's setting: checks this script
    OWSYNC_C_BIN=/path/to/owsync-1.2.0 .venv/bin/python bench/long_run.py --soak 3600

Runs, one after another: the crash suites (random moments, every crash
point), the churn of running daemons, the hostile peers, the fuzzers, the
network faults, the soak, and the first sync onto disk beside owsync 1.2.0
(when OWSYNC_C_BIN names its binary).  Each
suite is the test file CI runs, with its long-setting variables set; their
output goes to a log directory, and a summary table ends the run.  The exit
status is 1 when any suite failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

LONG = {
    "OWSYNC_CRASH_ITERATIONS": "200",
    "OWSYNC_CRASH_POINTS": "all",
    "OWSYNC_CHURN_ROUNDS": "100",
    "OWSYNC_CHURN_NODES": "5",
    "OWSYNC_FUZZ_EXAMPLES": "20000",
    "OWSYNC_FAULTS_LONG": "1",
}
FAST: dict[str, str] = {}  # every suite's own CI default


def pytest_run(name: str, files: list[str], env: dict, logs: Path) -> dict:
    """Run test files; return counts from their JUnit XML and their output."""
    files = [f for f in files if (ROOT / f).exists()]
    if not files:
        return {"name": name, "missing": True}
    xml, log = logs / f"{name}.xml", logs / f"{name}.log"
    t = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(
            [PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", f"--junitxml={xml}",
             *files],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        ).returncode  # fmt: skip
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            if kinds & {"failure", "error"}:
                counts["failed"] += 1
            elif "skipped" in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    return {
        "name": name,
        "rc": rc,
        "seconds": round(time.monotonic() - t),
        **counts,
        "output": log.read_text(errors="replace"),
        "log": str(log),
    }


def crash_figures(out: str) -> str:
    kills = re.findall(r"(?:(listener|daemon), )?seed (\d+) \((\w[\w ]*)\): (\d+) of (\d+)", out)
    roles: dict[str, list[int]] = {}
    for role, _seed, how, _done, _total in kills:
        tally = roles.setdefault(role or "connect", [0, 0])
        tally[0] += 1
        tally[1] += how == "killed"
    mid = sum(1 for *_, how, done, total in kills if how == "killed" and done != total)
    parts = [f"{role} {n} ({k} killed)" for role, (n, k) in roles.items()]
    failed = re.findall(r"AssertionError: ((?:listener, |daemon, )?seed \d+)", out)
    text = f"{', '.join(parts)}; {mid} killed before all files were in place"
    return text + (f"; failing seeds: {', '.join(sorted(set(failed)))}" if failed else "")


def soak_figures(f: dict | None) -> str:
    if not f:
        return ""
    parts = [f"{f.get('duration')} s, {f.get('ops')} changes, {f.get('sessions')} sessions"]
    for name, d in sorted(f.get("daemons", {}).items()):
        rss, fds = d.get("rss_kib", {}), d.get("fds", {})
        parts.append(
            f"{name}: RSS {rss.get('start')}->{rss.get('end')} KiB,"
            f" slope {rss.get('slope_per_hour')} KiB/h; fds {fds.get('start')}->{fds.get('end')},"
            f" slope {fds.get('slope_per_hour')}/h"
        )
    parts.append("converged" if f.get("converged") else "NOT converged")
    return "; ".join(parts)


def soak(seconds: int, logs: Path) -> dict:
    script = ROOT / "bench" / "soak.py"
    if not script.exists():
        return {"name": "soak", "missing": True}
    log = logs / "soak.log"
    with open(log, "w") as out:
        r = subprocess.run(
            [PY, str(script), "--duration", str(seconds), "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=out, text=True,
        )  # fmt: skip
    res = {"name": "soak", "rc": r.returncode, "log": str(log)}
    try:
        res["figures"] = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res["rc"] = res["rc"] or 1
    return res


def disk(repeat: int, files: int, logs: Path) -> dict:
    log = logs / "disk.log"
    r = subprocess.run(
        [PY, str(ROOT / "bench" / "disk_bench.py"), "--repeat", str(repeat), "--files", str(files)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    log.write_text(r.stdout + r.stderr)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.startswith("  ")]
    return {"name": "disk", "rc": r.returncode, "lines": lines, "log": str(log)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="CI's setting of every suite")
    ap.add_argument("--soak", type=int, default=None, metavar="SECONDS",
                    help="soak duration (default: 1800, or 30 with --fast)")  # fmt: skip
    ap.add_argument("--logs", default=None, help="directory for the suites' output")
    args = ap.parse_args()
    soak_s = args.soak if args.soak is not None else (30 if args.fast else 1800)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="owsync-long-"))
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **(FAST if args.fast else LONG))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    setting = "fast (CI's)" if args.fast else "long"
    print(f"owsync fault suites, {setting} setting; output in {logs}", flush=True)

    rows: list[tuple[str, str, str]] = []
    failed = False

    def add(res: dict, figures: str) -> None:
        nonlocal failed
        if res.get("missing"):
            rows.append((res["name"], "absent", "its files are not in this checkout"))
            return
        bad = res.get("rc", 0) != 0 or res.get("failed", 0) > 0
        failed |= bad
        state = "FAILED" if bad else "ok"
        if "seconds" in res:
            state += f", {res['seconds']} s"
        rows.append((res["name"], state, figures))
        print(f"  {res['name']}: {state}", flush=True)

    def counts(res: dict) -> str:
        if res.get("missing"):
            return ""
        return f"{res['passed']} passed, {res['failed']} failed, {res['skipped']} skipped"

    suites = [
        ("crash", ["tests/test_crash.py"]),
        ("crash points", ["tests/test_crash_points.py"]),
        ("churn", ["tests/test_churn.py"]),
        (
            "hostile",
            ["tests/test_hostile.py", "tests/test_hostile_more.py", "tests/test_hostile_v2.py"],
        ),  # fmt: skip
        ("fuzz", ["tests/test_fuzz.py", "tests/test_protocol2.py", "tests/test_session2.py"]),
        ("network faults", ["tests/test_net_faults.py"]),
        ("full disk", ["tests/test_limits.py"]),
    ]
    for name, files in suites:
        res = pytest_run(name.replace(" ", "_"), files, env, logs)
        res["name"] = name
        figures = counts(res)
        if name == "crash" and not res.get("missing"):
            figures += "; " + crash_figures(res["output"])
        elif name == "crash points" and not res.get("missing"):
            found = re.findall(r"^(\S+: \d+ crash points, \d+ calls; killed at \d+)",
                               res["output"], re.M)  # fmt: skip
            figures += "; " + "; ".join(found)
        elif name == "churn" and not res.get("missing"):
            nodes = env.get("OWSYNC_CHURN_NODES", "CI default")
            rounds = env.get("OWSYNC_CHURN_ROUNDS", "CI default")
            figures += f"; rounds {rounds}, daemons {nodes}"
        elif name == "fuzz" and not res.get("missing"):
            figures += f"; {env.get('OWSYNC_FUZZ_EXAMPLES', '1000')} examples per test"
        add(res, figures)

    res = soak(soak_s, logs)
    add(res, soak_figures(res.get("figures")) or f"see {res.get('log')}")
    if os.environ.get("OWSYNC_C_BIN"):
        res = disk(3 if args.fast else 7, 2000 if args.fast else 10000, logs)
        add(res, "; ".join(res["lines"]))
    else:
        rows.append(("first sync on disk", "not run", "set OWSYNC_C_BIN to a 1.2.0 binary"))

    print()
    width = max(len(r[0]) for r in rows)
    for name, state, figures in rows:
        print(f"{name:<{width}}  {state:<12}  {figures}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
