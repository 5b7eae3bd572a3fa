"""This router's VRRP roles, as keepalived reports them.

keepalived runs ``/sbin/hotplug-call keepalived`` on every transition of a
VRRP instance; owsync's hotplug script passes it on as ``ubus call owsync
vrrp '{"instance": NAME, "role": ROLE}'`` (or ``owsync vrrp NAME ROLE``).
The daemon keeps each instance's role and since when, tells its live peers,
and reconciles with every peer at once: a router that just became MASTER
then holds the group's latest configuration.  The status shows, per
instance, whether that reconcile is still under way (``reconciling``) and
when the last one ended (``reconciled``).

keepalived starts before owsync on a router (START 70 and 95): a transition
it reports while the daemon is not yet on the bus is lost to it.  OpenWrt's
keepalived package keeps each instance's last ACTION and its time in
``/var/run/keepalived/NAME_INSTANCE/{STATUS,TIME}`` (its hotplug script
01-ubus, which runs before owsync's); the daemon starts from those.
"""

from __future__ import annotations

import os
import threading

from ..core.live import MAX_INSTANCES, ROLES, Role, valid_instance

STOP = "STOP"  # keepalived stopped the instance here: it has no role any more
KEEPALIVED_STATUS = "/var/run/keepalived"  # OpenWrt's keepalived package: NAME_INSTANCE/


def parse_role(text: object) -> str:
    """MASTER, BACKUP, FAULT or STOP, from either spelling of keepalived's
    hotplug ACTION (``NOTIFY_MASTER`` or ``MASTER``), in any case; ValueError else."""
    if isinstance(text, str):
        role = text.strip().upper().removeprefix("NOTIFY_")
        if role in (*ROLES, STOP):
            return role
    raise ValueError(f"role must be MASTER, BACKUP, FAULT or STOP (or NOTIFY_...), not {text!r}")


def check_instance(name: object) -> str:
    if not valid_instance(name):
        raise ValueError("instance must be a VRRP instance's name: 1 to 64 printable characters")
    assert isinstance(name, str)
    return name


def keepalived_roles(status_dir: str, limit: int = MAX_INSTANCES) -> dict[str, Role]:
    """The roles OpenWrt's keepalived package recorded in ``status_dir`` (an
    instance it stopped has none); what cannot be read is left out."""
    try:
        entries = sorted(os.listdir(status_dir))
    except OSError:
        return {}
    out: dict[str, Role] = {}
    for entry in entries:
        name, sep, kind = entry.rpartition("_")
        if not sep or kind != "INSTANCE" or not valid_instance(name) or len(out) >= limit:
            continue
        base = os.path.join(status_dir, entry)
        try:
            with open(os.path.join(base, "STATUS")) as f:
                role = parse_role(f.read(64))
            with open(os.path.join(base, "TIME")) as f:
                since = int(f.read(32).strip())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if role in ROLES and since >= 0:
            out[name] = Role(role, since)
    return out


class VrrpRoles:
    """Each VRRP instance's role, since when, and its reconcile (thread-safe)."""

    MAX = MAX_INSTANCES  # instances kept: as many as a VRRP frame carries

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[str, Role] = {}
        self._gen: dict[str, int] = {}  # transitions seen per instance
        self._done: dict[str, int] = {}  # the transition whose reconcile ended last
        self._reconciled: dict[str, float] = {}

    def load(self, roles: dict[str, Role]) -> None:
        """Roles known before the daemon started (no reconcile of theirs)."""
        with self._lock:
            for name, role in list(roles.items())[: self.MAX - len(self._roles)]:
                self._roles.setdefault(name, role)

    def set(self, instance: str, role: str, now: int) -> tuple[bool, int]:
        """Note a transition: (whether the role changed, its number)."""
        with self._lock:
            old = self._roles.get(instance)
            if old is None and len(self._roles) >= self.MAX:
                raise ValueError(f"more than {self.MAX} VRRP instances")
            changed = old is None or old.role != role
            if changed:
                self._roles[instance] = Role(role, now)
            gen = self._gen[instance] = self._gen.get(instance, 0) + 1
            return changed, gen

    def stop(self, instance: str) -> bool:
        """keepalived stopped the instance here: forget its role (whether it had one)."""
        with self._lock:
            self._gen.pop(instance, None)
            self._done.pop(instance, None)
            self._reconciled.pop(instance, None)
            return self._roles.pop(instance, None) is not None

    def reconciled(self, instance: str, gen: int, when: float) -> None:
        """The reconcile of transition ``gen`` ended."""
        with self._lock:
            if instance in self._gen and gen >= self._done.get(instance, 0):
                self._done[instance] = gen
                self._reconciled[instance] = when

    def table(self) -> dict[str, Role]:
        with self._lock:
            return dict(self._roles)

    def view(self) -> dict[str, dict]:
        """The status model's ``vrrp``: per instance its role, since, and its reconcile."""
        with self._lock:
            return {
                name: {
                    "role": r.role,
                    "since": r.since,
                    "reconciling": self._done.get(name, 0) < self._gen.get(name, 0),
                    "reconciled": self._reconciled.get(name),
                }
                for name, r in sorted(self._roles.items())
            }


def roles_view(roles: dict[str, Role]) -> dict[str, dict]:
    """A peer's roles as the status shows them."""
    return {name: {"role": r.role, "since": r.since} for name, r in sorted(roles.items())}
