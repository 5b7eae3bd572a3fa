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
		"why": "ssh to the VIP meets the same host key after a failover",
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
		"why": "the web interface at the VIP shows the same TLS certificate after a failover",
		"dir": "/etc",
		"include": [
			"uhttpd.crt",
			"uhttpd.key"
		],
		"exclude": [],
		"reload": [
			"uhttpd"
		],
		"restart": []
	},
	{
		"name": "passwd",
		"why": "the same root password and users on both routers",
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
		"why": "the same scheduled jobs run on whichever router is master",
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
		"name": "rclocal",
		"why": "the same boot commands and kernel settings on both routers",
		"dir": "/etc",
		"include": [
			"rc.local",
			"sysctl.conf"
		],
		"exclude": [],
		"reload": [],
		"restart": []
	},
	{
		"name": "acme",
		"why": "certificates obtained by one router serve on the other after a failover",
		"dir": "/etc/acme",
		"include": [
			"*"
		],
		"exclude": [],
		"reload": [
			"uhttpd"
		],
		"restart": []
	}
];

return baseclass.extend({
	list: function() {
		return EXAMPLES;
	}
});
