'use strict';
'require baseclass';

/*
 * The shipped sync groups, offered as ready choices on the Settings page:
 * each one's name (its UCI section), why an HA pair wants it, its directory,
 * patterns and the services it reloads or restarts.
 *
 * Generated from owsync/core/examples.py by scripts/genexamples.py: do not
 * edit by hand (tests/test_luci_app.py holds the two equal).
 */

var EXAMPLES = [
	{
		"name": "dropbear",
		"why": "The same SSH host keys: ssh root@VIP warns of no new key after a failover",
		"dir": "/etc/dropbear",
		"include": [
			"dropbear_*_host_key"
		],
		"exclude": [],
		"reload": [],
		"restart": [
			"dropbear"
		]
	},
	{
		"name": "uhttpd",
		"why": "LuCI over HTTPS at the VIP shows the certificate the browser trusts",
		"dir": "/etc",
		"include": [
			"uhttpd.crt",
			"uhttpd.key"
		],
		"exclude": [],
		"reload": [],
		"restart": [
			"uhttpd"
		]
	},
	{
		"name": "accounts",
		"why": "The same root password and users: a failover locks no admin out",
		"dir": "/etc",
		"include": [
			"passwd",
			"shadow",
			"group"
		],
		"exclude": [],
		"reload": [],
		"restart": []
	},
	{
		"name": "crontabs",
		"why": "Root's scheduled jobs are the same whichever router is master",
		"dir": "/etc/crontabs",
		"include": [
			"root"
		],
		"exclude": [],
		"reload": [
			"cron"
		],
		"restart": []
	},
	{
		"name": "boot",
		"why": "The same boot commands and kernel settings: the backup boots as the master",
		"dir": "/etc",
		"include": [
			"rc.local",
			"sysctl.conf"
		],
		"exclude": [],
		"reload": [],
		"restart": [
			"sysctl"
		]
	},
	{
		"name": "acme",
		"why": "A certificate the acme package renewed on one router serves on the other",
		"dir": "/etc/acme",
		"include": [
			"*.cer",
			"*.key"
		],
		"exclude": [],
		"reload": [],
		"restart": [
			"uhttpd"
		]
	}
];

return baseclass.extend({
	list: function() {
		return EXAMPLES;
	}
});
