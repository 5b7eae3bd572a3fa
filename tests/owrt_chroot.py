"""An OpenWrt root in a chroot, inside new mount, PID and network namespaces.

Runs OpenWrt's own boot pieces for tests/test_initscript_real.py: ubusd, logd,
``procd -S`` (not as PID 1: it serves the ``service`` object), then
``reload_config`` once, and lets a test type commands as a router's admin
would, with busybox ``ash`` as ``/bin/sh``.

``OWSYNC_OPENWRT_ROOT`` is a directory laid out like an OpenWrt root holding
OpenWrt's pieces (none of them is in this repository):

    etc/rc.common  lib/functions.sh  lib/functions/{service,procd}.sh
    lib/config/uci.sh  usr/share/libubox/jshn.sh  sbin/reload_config
    sbin/service  sbin/{ubusd,ubus,procd,logd,logread,uci,validate_data}
    usr/bin/jsonfilter  usr/lib/lib*.so*

``OWSYNC_PYBINDINGS`` holds the compiled ``ubus`` and ``uci`` python modules.

The chroot: a tmpfs root with that tree copied in; ``/usr`` an overlay of its
``usr/`` over the host's ``/usr`` (Python, glibc, json-c); the host's
``/lib/x86_64-linux-gnu`` and ``/lib64`` bound in; busybox (the tree's
``bin/busybox``, else the host's) as ``/bin/sh`` with its applets (``flock``,
which ``rc.common`` needs and busybox lacks, comes from the tree's ``usr/bin``
or the host's ``/usr``); ``/proc`` of the new PID namespace with ``/proc/kmsg``
covered by ``/dev/null`` and a private ``/dev`` (so logd creates its own
``/dev/log`` and never drains the host's kernel log); a writable ``/etc`` with
``passwd``, ``group``, a minimal ``config/system``, this repository's
``openwrt/owsync/files/etc/init.d/owsync`` and ``openwrt/owsync/files/etc/config/owsync``; and
``/usr/bin/owsync``, a two-line sh wrapper running ``python -m owsync`` with
the test's interpreter and ``PYTHONPATH=<bindings>:<this checkout>``. The
interpreter's tree (and the venv), this checkout and the bindings are
bind-mounted read-only at the same paths. Skipped, with the reason, when a
piece is missing or namespaces and mounts cannot be made (not root, or a
container without the privilege). Everything runs in the namespaces and dies
with their PID 1 (``stop``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT_ENV = "OWSYNC_OPENWRT_ROOT"
NEEDED = ("etc/rc.common", "lib/functions.sh", "lib/functions/procd.sh",
          "lib/functions/service.sh", "lib/config/uci.sh", "usr/share/libubox/jshn.sh",
          "sbin/ubusd", "sbin/ubus", "sbin/procd", "sbin/logd", "sbin/logread", "sbin/uci",
          "sbin/validate_data", "sbin/reload_config", "usr/bin/jsonfilter")  # fmt: skip

BOOT = r"""#!/bin/sh
# PID 1 of the namespaces: OpenWrt's daemons in the order a router starts them
ip link set lo up 2>/dev/null || busybox ip link set lo up
mkdir -p /var/run /var/lock /var/state /tmp/.uci
/sbin/ubusd &
while [ ! -S /var/run/ubus/ubus.sock ]; do sleep 0.05; done
/sbin/logd -S 256 &
/sbin/procd -S >/tmp/procd.log 2>&1 &
while ! ubus -t 1 wait_for service 2>/dev/null; do sleep 0.1; done
/sbin/reload_config
[ -x /boot.local ] && /boot.local
touch /tmp/booted
trap 'exit 0' TERM
while :; do sleep 1; done
"""

# run by `unshare`: mounts, then the chroot's PID 1
SETUP = r"""set -e
R="$1"; OWRT="$2"; HOST_PY="$3"; REPO="$4"; BIND="$5"
mount -t tmpfs -o mode=0755 owsync-owrt "$R"
# busybox first (the tree's own, else the host's), the OpenWrt tree over it:
# busybox's own logread must not win
mkdir -p "$R"/bin
BB="$OWRT"/bin/busybox
[ -x "$BB" ] || BB="$(command -v busybox)"
cp "$BB" "$R"/bin/busybox
chroot "$R" /bin/busybox --install -s
cp -a --remove-destination "$OWRT"/. "$R"/
mkdir -p "$R"/upper "$R"/work "$R"/usr.merged "$R"/proc "$R"/dev "$R"/tmp "$R"/var \
    "$R"/bin "$R"/lib/x86_64-linux-gnu "$R"/lib64 "$R"/etc/config "$R"/etc/init.d \
    "$R"/etc/rc.d "$R"/root
mv "$R"/usr "$R"/upper/usr
mkdir -p "$R"/usr
mount -t overlay overlay -o lowerdir=/usr,upperdir="$R"/upper/usr,workdir="$R"/work "$R"/usr
mount --bind /lib/x86_64-linux-gnu "$R"/lib/x86_64-linux-gnu
mount --bind /lib64 "$R"/lib64
for d in "$HOST_PY" "$REPO" $BIND; do
    mkdir -p "$R$d"
    mount --bind "$d" "$R$d"
    mount -o remount,bind,ro "$R$d"
done
mount -t proc proc "$R"/proc
mount --bind /dev/null "$R"/proc/kmsg
for n in null zero random urandom tty; do
    touch "$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
done
printf 'root:x:0:0:root:/root:/bin/ash\n' >"$R"/etc/passwd
printf 'root:x:0:\n' >"$R"/etc/group
printf "config system\n\toption hostname 'OpenWrt'\n" >"$R"/etc/config/system
cd /
exec chroot "$R" /bin/sh /boot.sh
"""


def skip_reason() -> str | None:
    root = os.environ.get(ROOT_ENV, "")
    bindings = os.environ.get("OWSYNC_PYBINDINGS", "")
    if not root:
        return f"set {ROOT_ENV} to an OpenWrt root tree (see tests/owrt_chroot.py, README)"
    missing = [p for p in NEEDED if not os.path.exists(os.path.join(root, p))]
    if missing:
        return f"{ROOT_ENV}={root} lacks {', '.join(missing)}"
    if not (bindings and os.path.isdir(bindings)):
        return "set OWSYNC_PYBINDINGS to the compiled ubus and uci python modules (README)"
    has_busybox = os.path.exists(os.path.join(root, "bin/busybox")) or shutil.which("busybox")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nsenter")):
        return "needs root, unshare and nsenter"
    if not has_busybox:
        return f"needs busybox: in {ROOT_ENV}/bin or on the host (Debian's busybox-static)"
    return _namespaces_fail()


@functools.cache
def _namespaces_fail() -> str | None:
    """Why new mount, PID and network namespaces with tmpfs and overlay mounts
    cannot be made here (a container without the privilege), or None."""
    probe = (
        "d=$(mktemp -d) && mount -t tmpfs probe $d && mkdir $d/l $d/u $d/w $d/m"
        " && mount -t overlay probe -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m"
        " && umount $d/m && umount $d && rmdir $d"
    )
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private",
             "sh", "-c", probe],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make namespaces: {exc}"
    if r.returncode != 0:
        return f"cannot make mount/PID/network namespaces or mounts here: {r.stderr.strip()}"
    return None


class OpenWrtRoot:
    """The namespaces and their chroot; stopped by killing its PID 1 (ours)."""

    def __init__(
        self, tmp: Path, trees=(), net: bool = True, prepare=None, owsync: bool = True
    ) -> None:
        """``trees`` are laid over the OpenWrt tree; ``prepare(staging)`` may add
        files (an executable ``/boot.local`` runs once the base has booted);
        ``net=False`` keeps the host's network, so that a browser can reach it;
        ``owsync=False`` leaves owsync out (a package manager installs it)."""
        self.base = tmp / "owrt"
        self.base.mkdir()
        self.root = self.base / "root"
        self.root.mkdir()
        staging = self.base / "staging"
        shutil.copytree(os.environ[ROOT_ENV], staging, symlinks=True)
        for tree in trees:
            shutil.copytree(tree, staging, symlinks=True, dirs_exist_ok=True)
        (staging / "boot.sh").write_text(BOOT)
        init = staging / "etc/init.d"
        init.mkdir(parents=True, exist_ok=True)
        (staging / "etc/config").mkdir(parents=True, exist_ok=True)
        if owsync:
            shutil.copy(REPO / "openwrt/owsync/files/etc/init.d/owsync", init / "owsync")
            shutil.copy(
                REPO / "openwrt/owsync/files/etc/config/owsync", staging / "etc/config/owsync"
            )
        if prepare is not None:
            prepare(staging)
        (staging / "usr/bin").mkdir(parents=True, exist_ok=True)
        bindings = os.environ["OWSYNC_PYBINDINGS"]
        if owsync:
            wrapper = staging / "usr/bin/owsync"
            wrapper.write_text(
                f"#!/bin/sh\nPYTHONPATH={bindings}:{REPO} PYTHONDONTWRITEBYTECODE=1"
                f' exec {sys.executable} -m owsync "$@"\n'
            )
            wrapper.chmod(0o755)
        self.log = open(self.base / "namespace.log", "w")  # noqa: SIM115 - closed in stop()
        host_py = sys.base_prefix  # the interpreter's tree (pyenv, /usr: either is bound)
        venv = sys.prefix if sys.prefix != sys.base_prefix else ""
        binds = " ".join(p for p in (bindings, venv) if p and not p.startswith(str(REPO)))
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", *(["--net"] if net else []), "--fork",
             "--propagation", "private",
             "sh", "-c", SETUP, "setup", str(self.root), str(staging), host_py, str(REPO), binds],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the OpenWrt namespace did not start: {self.log_text()}")
            if self.pid1() and self.sh("test -e /tmp/booted").returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail(f"the OpenWrt root did not boot: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return (self.base / "namespace.log").read_text()

    def pid1(self) -> int | None:
        """The chroot's PID 1, seen from here: the child of `unshare --fork`."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        kids = children.split()
        return int(kids[0]) if kids else None

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``script`` with /bin/sh (busybox ash) in the chroot, as root on the router."""
        pid = self.pid1()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "TERM": "dumb"}
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "-p", "-n", "-r", "-w", "/bin/sh", "-c", script],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def ok(self, script: str, timeout: float = 60) -> str:
        r = self.sh(script, timeout)
        assert r.returncode == 0, f"{script}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        return r.stdout

    def stop(self) -> None:
        pid = self.pid1()
        if pid:
            os.kill(pid, 9)  # PID 1 of our namespace: everything in it goes with it
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
