"""The sync groups an HA router pair typically wants besides /etc/config.

Shipped commented out in /etc/config/owsync (a test holds that file to this
table) and offered by LuCI as ready choices.  Each entry: the group's name,
one line saying why a VRRP pair wants it, its directory, patterns, and the
init scripts to reload or restart when its files arrive.  None of them can
own a path another (or main's /etc/config) owns: the /etc ones name their
files exactly.

uhttpd reads its certificate when it starts, and its init script's reload
keeps the running instance when its command line is unchanged: the
certificate groups restart it.  The acme package keeps the certificates it
issues in /etc/acme; /etc/ssl/acme only holds symlinks to them, which owsync
never syncs.
"""

from __future__ import annotations

EXAMPLES: tuple[dict, ...] = (
    {
        "name": "dropbear",
        "why": "The same SSH host keys: ssh root@VIP warns of no new key after a failover",
        "dir": "/etc/dropbear",
        "include": ("dropbear_*_host_key",),
        "exclude": (),
        "reload": (),
        "restart": ("dropbear",),
    },
    {
        "name": "uhttpd",
        "why": "LuCI over HTTPS at the VIP shows the certificate the browser trusts",
        "dir": "/etc",
        "include": ("uhttpd.crt", "uhttpd.key"),
        "exclude": (),
        "reload": (),
        "restart": ("uhttpd",),
    },
    {
        "name": "accounts",
        "why": "The same root password and users: a failover locks no admin out",
        "dir": "/etc",
        "include": ("passwd", "shadow", "group"),
        "exclude": (),
        "reload": (),
        "restart": (),
    },
    {
        "name": "crontabs",
        "why": "Root's scheduled jobs are the same whichever router is master",
        "dir": "/etc/crontabs",
        "include": ("root",),
        "exclude": (),
        "reload": ("cron",),
        "restart": (),
    },
    {
        "name": "boot",
        "why": "The same boot commands and kernel settings: the backup boots as the master",
        "dir": "/etc",
        "include": ("rc.local", "sysctl.conf"),
        "exclude": (),
        "reload": (),
        "restart": ("sysctl",),
    },
    {
        "name": "acme",
        "why": "A certificate the acme package renewed on one router serves on the other",
        "dir": "/etc/acme",
        "include": ("*.cer", "*.key"),
        "exclude": (),
        "reload": (),
        "restart": ("uhttpd",),
    },
)
