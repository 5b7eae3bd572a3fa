'use strict';
'require baseclass';

/*
 * What the owsync views show, computed from the daemon's status without
 * touching the page: relative times, peer health, table rows, the sentences
 * of recent activity.  Every function takes "now" (epoch seconds) where time
 * matters, so that it can be tested on its own (tests/luci/format.test.mjs).
 */

/* A UCI package arriving makes procd reload the service that reads it. */
var SERVICES = {
	dhcp: 'dnsmasq',
	firewall: 'firewall',
	uhttpd: 'uhttpd',
	dropbear: 'dropbear',
	sqm: 'sqm',
	ddns: 'ddns',
	upnpd: 'miniupnpd'
};

var HEALTH_LABELS = {
	'in-sync': _('In sync'),
	'syncing': _('Syncing'),
	'retrying': _('Retrying'),
	'failing': _('Failing'),
	'pending': _('Not synced yet')
};

/* The daemon's words for a peer's state and a session's direction, translated. */
var STATE_LABELS = {
	'idle': _('idle'),
	'connecting': _('connecting'),
	'connected': _('connected'),
	'syncing': _('syncing'),
	'backing off': _('backing off')
};

var DIRECTION_LABELS = {
	'incoming': _('incoming'),
	'outgoing': _('outgoing')
};

/* Consecutive failures from which a peer counts as failing, not retrying. */
var FAILING_AFTER = 3;

/*
 * What replaced a kept version (ubus luci.owsync versions), in a word for its
 * label and in a sentence.  "deleted" with no peer is a deletion made here.
 */
var REASON_LABELS = {
	'replaced': _('Replaced'),
	'deleted': _('Deleted'),
	'conflict': _('Conflict'),
	'edited': _('Edited'),
	'restored': _('Restored')
};

var REASON_TEXTS = {
	'replaced': _('overwritten by a newer write from a peer'),
	'deleted': _('deleted by a peer'),
	'conflict': _('written here, lost to a newer write from a peer before any peer had it'),
	'edited': _('replaced by an edit on this router'),
	'restored': _('replaced by a restore')
};

var SIZE_UNITS = [ 'KiB', 'MiB', 'GiB', 'TiB' ];

/* A router's role in a VRRP instance (keepalived's words), and the theme's label class for it. */
var ROLE_CLASSES = {
	'MASTER': 'success',
	'BACKUP': 'notice',
	'FAULT': 'important'
};

/*
 * A sync group's state (the daemon's status "groups"), and each peer's state
 * for that group, in words and in the theme's label classes.
 */
var GROUP_STATES = {
	'syncing': [ _('Syncing'), 'success' ],
	'waiting': [ _('Waiting'), 'warning' ],
	'disabled': [ _('Disabled'), '' ]
};

var GROUP_PEER_STATES = {
	'synced': [ _('synced'), 'success', _('In sync for this group') ],
	'pending': [ _('pending'), 'notice', _('Not synced yet for this group') ],
	'absent': [ _('absent'), '', _('The peer has no such group (or has it disabled): nothing to sync there') ],
	'v1': [ _('v1'), 'warning', _('The peer speaks protocol 1 (owsync 1.2.0), which syncs the main group only') ]
};

var MAIN_GROUP = 'main';

function pad(n) {
	return (n < 10 ? '0' : '') + n;
}

return baseclass.extend({
	/* The browser's clock, in epoch seconds: the "now" the views pass on. */
	now: function() {
		return Date.now() / 1000;
	},

	/*
	 * LuCI's E() and dom.content() set a lone string child as innerHTML; text
	 * that comes from the daemon (file names, a peer's error, a diff) goes in
	 * as a text node, inside an array.
	 */
	text: function(s) {
		return [ s == null ? '' : String(s) ];
	},

	FAILING_AFTER: FAILING_AFTER,

	/* "42 s ago", "3 min ago", "2 h ago", "5 days ago"; "never" for none. */
	relativeTime: function(t, now) {
		if (t == null)
			return _('never');

		var d = Math.round(now - t);

		if (d < 0)
			return _('in %d s').format(-d);
		if (d < 5)
			return _('just now');
		if (d < 60)
			return _('%d s ago').format(d);
		if (d < 3600)
			return _('%d min ago').format(Math.floor(d / 60));
		if (d < 86400)
			return _('%d h ago').format(Math.floor(d / 3600));

		return _('%d days ago').format(Math.floor(d / 86400));
	},

	/* "in 12 s", for a retry that is due later. */
	untilTime: function(t, now) {
		if (t == null)
			return '-';

		var d = Math.max(0, Math.round(t - now));

		return d < 60 ? _('in %d s').format(d) : _('in %d min').format(Math.ceil(d / 60));
	},

	/* The absolute local time, for a tooltip: "2026-11-26 21:09:23". */
	absoluteTime: function(t) {
		if (t == null)
			return '';

		var d = new Date(t * 1000);

		return '%d-%s-%s %s:%s:%s'.format(d.getFullYear(), pad(d.getMonth() + 1),
			pad(d.getDate()), pad(d.getHours()), pad(d.getMinutes()), pad(d.getSeconds()));
	},

	duration: function(s) {
		s = Math.max(0, Math.floor(s || 0));

		var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;

		if (d > 0)
			return _('%dd %dh %dm').format(d, h, m);

		return _('%dh %dm').format(h, m);
	},

	/* in-sync, syncing, retrying, failing or pending (never attempted). */
	health: function(peer) {
		if (peer.state == 'syncing')
			return 'syncing';
		if (peer.last_result == null)
			return 'pending';
		if (peer.last_result == 'ok')
			return 'in-sync';
		if ((peer.consecutive_failures || 0) >= FAILING_AFTER)
			return 'failing';

		return 'retrying';
	},

	healthLabel: function(health) {
		return HEALTH_LABELS[health] || health;
	},

	/* The cells of one peer row, as text, with the tooltip of the time. */
	peerRow: function(peer, now) {
		var health = this.health(peer);

		return {
			address: peer.address,
			source: peer.source || '',
			health: health,
			healthLabel: this.healthLabel(health),
			state: peer.live
				? _('connected %s').format(this.relativeTime(peer.live.connected_since, now))
				: (STATE_LABELS[peer.state] || peer.state),
			lastSuccess: this.relativeTime(peer.last_success, now),
			lastSuccessTitle: this.absoluteTime(peer.last_success),
			result: peer.last_result == null ? '-' : peer.last_result,
			counts: '%d / %d / %d'.format(peer.received || 0, peer.sent || 0, peer.deleted || 0),
			failures: String(peer.consecutive_failures || 0),
			vrrp: this.peerVrrp(peer.vrrp),
			nextRetry: peer.state == 'backing off' ? this.untilTime(peer.next_retry, now) : '-',
			protocol: peer.live ? _('v2 live') : this.protocolLabel(peer.protocol),
			protocolTitle: peer.live
				? _('Live link: %d updates sent, %d received; last %s').format(
					peer.live.updates_sent || 0, peer.live.updates_received || 0,
					this.relativeTime(peer.live.last_update_received || peer.live.last_update_sent, now))
				: (peer.protocol == 1 ? _('Protocol 1: that of owsync 1.2.0') : '')
		};
	},

	/*
	 * This router's VRRP roles (the status's "vrrp": instance -> {role, since}),
	 * one row per instance, sorted; none when keepalived told of none.
	 */
	vrrpRows: function(vrrp, now) {
		var self = this;

		return Object.keys(vrrp || {}).sort().map(function(name) {
			var v = vrrp[name] || {};

			return {
				instance: name,
				role: String(v.role == null ? '?' : v.role),
				roleClass: ROLE_CLASSES[v.role] || '',
				since: v.since == null ? '-' : _('since %s').format(self.relativeTime(v.since, now)),
				sinceTitle: self.absoluteTime(v.since)
			};
		});
	},

	/* A peer's VRRP roles in a cell: "VI_1: MASTER, VI_2: BACKUP"; "-" when it told none. */
	peerVrrp: function(vrrp) {
		var names = Object.keys(vrrp || {}).sort();

		return names.length ? names.map(function(name) {
			return '%s: %s'.format(name, (vrrp[name] || {}).role || '?');
		}).join(', ') : '-';
	},

	/* The protocol of the peer's last session: "v2", "v1", or "-" before any Hello. */
	protocolLabel: function(protocol) {
		return protocol ? 'v' + protocol : '-';
	},

	directionLabel: function(direction) {
		return DIRECTION_LABELS[direction] || direction;
	},

	serviceOf: function(pkg) {
		return SERVICES[pkg] || pkg;
	},

	/* "dhcp from 192.168.1.2, 3 min ago, dnsmasq reloaded"; "dropbear: …" in a group besides main */
	historySentence: function(e, now) {
		var group = (e.group && e.group != MAIN_GROUP) ? e.group + ': ' : '';

		return group + this.historyText(e, now);
	},

	historyText: function(e, now) {
		var when = this.relativeTime(e.time, now);

		if (!e.ok) {
			var times = e.repeats > 1 ? ' ' + _('(%d times)').format(e.repeats) : '';

			return _('Sync with %s failed, %s: %s').format(e.peer, when, e.error || '?') + times;
		}

		var parts = [];
		var arrived = e.arrived || [], removed = e.removed || [];

		if (arrived.length)
			parts.push(_('%s from %s').format(this.listPaths(arrived, e.received), e.peer));
		if (removed.length)
			parts.push(_('%s deleted by %s').format(this.listPaths(removed, e.deleted), e.peer));
		if (e.sent > 0)
			parts.push(_('%d file(s) sent to %s').format(e.sent, e.peer));
		if (!parts.length)
			parts.push(_('Synced with %s').format(e.peer));

		var sentence = parts.join('; ') + ', ' + when;

		if ((e.reloaded || []).length)
			sentence += ', ' + _('%s reloaded').format(e.reloaded.map(this.serviceOf).join(', '));

		return sentence;
	},

	/* "dhcp, firewall" or "dhcp, firewall and 3 more" when the daemon kept only some. */
	listPaths: function(paths, total) {
		var text = paths.join(', ');
		var more = (total || paths.length) - paths.length;

		return more > 0 ? _('%s and %d more').format(text, more) : text;
	},

	MAIN_GROUP: MAIN_GROUP,

	/* Whether the status names a group besides main (the Groups table is shown then). */
	hasGroups: function(groups) {
		return (groups || []).some(function(g) { return g.name != MAIN_GROUP; });
	},

	/*
	 * The cells of one sync group's row, as text: its state (and why it
	 * waits), its counts, its last change, the services it reloads or
	 * restarts, and each peer's state for it.
	 */
	groupRow: function(g, now) {
		var state = GROUP_STATES[g.state] || [ String(g.state == null ? '?' : g.state), '' ];
		var peers = g.peers || {};
		var actions = (g.reload || []).map(function(s) { return _('reload %s').format(s); })
			.concat((g.restart || []).map(function(s) { return _('restart %s').format(s); }));

		return {
			name: String(g.name),
			dir: String(g.dir == null ? '' : g.dir),
			state: String(g.state),
			stateLabel: state[0],
			stateClass: state[1],
			reason: g.reason ? String(g.reason) : '',
			files: _('%d files, %d tombstones').format(g.files || 0, g.tombstones || 0),
			lastChange: this.relativeTime(g.last_change, now),
			lastChangeTitle: this.absoluteTime(g.last_change),
			actions: actions.length ? actions.join(', ') : '-',
			peers: Object.keys(peers).sort().map(function(addr) {
				var p = GROUP_PEER_STATES[peers[addr]] || [ String(peers[addr]), '', '' ];

				return { address: addr, state: String(peers[addr]), label: p[0], labelClass: p[1], title: p[2] };
			})
		};
	},

	/* The daemon's facts as [label, value, warning?] rows. */
	daemonRows: function(st, now) {
		var rows = [
			[ _('Status'), _('Running (PID %d)').format(st.pid) ],
			[ _('Version'), st.version ],
			[ _('Uptime'), this.duration(st.uptime) ],
			[ _('Synced directory'), st.sync_dir ],
			[ _('Encryption'), st.encryption
				? _('AES-256-GCM, key %s').format((st.key && st.key.fingerprint) || '?')
				: _('PLAIN: unencrypted, only safe inside a VPN'), !st.encryption ],
			[ _('Listening'), st.listen_error
				? _('not listening on %s: %s (retrying)').format(st.listen, st.listen_error)
				: st.listen, !!st.listen_error ]
		];

		/* only when it is not the default, which takes owsync 1.2.0 peers too */
		if (st.min_protocol == 2)
			rows.push([ _('Minimum protocol'), _('2 (refuses owsync 1.2.0 peers)') ]);

		rows.push(
			[ _('Change detection'), st.change_detection || '-' ],
			[ _('Files'), _('%d files, %d tombstones').format(st.files || 0, st.tombstones || 0) ]);

		return rows;
	},

	/* For a running daemon that will not stay running: why, and the fix; null when all is well. */
	notEnabledAdvice: function(enabledInUci, enabledAtBoot) {
		if (!enabledInUci)
			return _('owsync is running, but disabled in Settings: it stops at the next Save & Apply or reload. Enable it under Settings to keep it.');
		if (enabledAtBoot === false)
			return _('owsync is running, but does not start at boot. Enable it under System → Startup, or run: /etc/init.d/owsync enable');

		return null;
	},

	/* Why no status came back, and what to do about it. */
	notRunningAdvice: function(enabledInUci, enabledAtBoot) {
		if (enabledAtBoot === false)
			return _('owsync is not started at boot. Enable it under System → Startup, or run: /etc/init.d/owsync enable; /etc/init.d/owsync start');
		if (!enabledInUci)
			return _('owsync is disabled. Enable it under Settings, set the key and at least one peer, then Save & Apply.');

		return _('owsync is enabled but not running. Check the key and the peers under Settings and the system log (logread -e owsync), or run: /etc/init.d/owsync start');
	},

	/* "512 B", "1.5 KiB", "12.0 MiB" */
	size: function(bytes) {
		var n = Math.max(0, +bytes || 0);

		if (n < 1024)
			return _('%d B').format(n);

		for (var i = 0; i < SIZE_UNITS.length - 1 && n >= 1024 * 1024; i++)
			n /= 1024;

		return '%s %s'.format((n / 1024).toFixed(1), SIZE_UNITS[i]);
	},

	/* The reason of a kept version in a word; an unknown one as the daemon says it. */
	reasonLabel: function(reason) {
		return REASON_LABELS[reason] || String(reason == null ? '?' : reason);
	},

	reasonText: function(v) {
		if (v.reason == 'deleted' && !v.peer)
			return _('deleted on this router');

		return REASON_TEXTS[v.reason] || this.reasonLabel(v.reason);
	},

	/* Who made the change that replaced the version: the peer, or this router. */
	versionBy: function(v) {
		return v.peer ? String(v.peer) : _('this router');
	},

	/*
	 * The cells of one kept version's row, as text.  The daemon's times are
	 * milliseconds since the epoch (kept: when it was kept; mtime: when the
	 * version itself was written); "now" is in seconds, as everywhere here.
	 */
	versionRow: function(v, now) {
		var kept = v.kept == null ? null : v.kept / 1000;
		var written = v.mtime == null ? null : v.mtime / 1000;

		return {
			id: v.id,
			ref: String(this.versionRef(v)),
			group: String(v.group || MAIN_GROUP),
			path: String(v.path == null ? '' : v.path),
			kept: this.relativeTime(kept, now),
			keptTitle: this.absoluteTime(kept),
			written: this.absoluteTime(written),
			reason: Object.prototype.hasOwnProperty.call(REASON_LABELS, v.reason) ? v.reason : 'other',
			reasonLabel: this.reasonLabel(v.reason),
			reasonText: this.reasonText(v),
			conflict: v.reason == 'conflict',
			by: this.versionBy(v),
			size: this.size(v.size),
			text: !!v.text
		};
	},

	/*
	 * How diff and restore name a kept version: its id in the main group,
	 * "GROUP:ID" in another (each group's store numbers its own versions).
	 */
	versionRef: function(v) {
		return (v.group && v.group != MAIN_GROUP) ? v.group + ':' + v.id : v.id;
	},

	/* The groups the versions and the stores name, main first, then by name. */
	versionGroups: function(versions, stores) {
		var seen = {};

		(versions || []).forEach(function(v) { seen[v.group || MAIN_GROUP] = true; });
		Object.keys(stores || {}).forEach(function(name) { seen[name] = true; });

		return Object.keys(seen).sort(function(a, b) {
			return (a == MAIN_GROUP) ? -1 : (b == MAIN_GROUP) ? 1 : (a < b ? -1 : a > b ? 1 : 0);
		});
	},

	/* The store's size and limits, in a line above the table. */
	storeSummary: function(store, count) {
		if (!store)
			return '';
		if (store.keep === 0)
			return _('No versions are kept: versions_keep is 0 in /etc/config/owsync.');

		return _('%d version(s) kept; the store holds %s in %d content(s), in %s. Limits: %d versions per file, %s in all, %d days.').format(
			count || 0, this.size(store.bytes), store.objects || 0, store.dir || '?',
			store.keep || 0, this.size(store.max_size), store.max_age_days || 0);
	},

	/*
	 * A unified diff as lines, each with its kind: head (the --- and +++
	 * lines), hunk (@@), del (only in the kept version), add (only in the
	 * current file), ctx (in both), note ("\ No newline at end of file").
	 */
	diffLines: function(diff) {
		var lines = String(diff == null ? '' : diff).split('\n');
		var out = [], inHunk = false;

		if (lines.length && lines[lines.length - 1] === '')
			lines.pop();

		lines.forEach(function(line) {
			var kind = 'ctx';

			if (line.indexOf('@@') === 0) {
				kind = 'hunk';
				inHunk = true;
			}
			else if (!inHunk && (line.indexOf('--- ') === 0 || line.indexOf('+++ ') === 0))
				kind = 'head';
			else if (line.charAt(0) == '-')
				kind = 'del';
			else if (line.charAt(0) == '+')
				kind = 'add';
			else if (line.charAt(0) == '\\')
				kind = 'note';

			out.push({ kind: kind, text: line });
		});

		return out;
	}
});
