'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require ui';
'require uci';
'require owsync.format as fmt';

/*
 * Services → owsync → Status.  Everything shown comes from the daemon's one
 * status model (ubus luci.owsync status, refreshed by poll); the page keeps
 * no state of its own except which "Sync now" it is waiting for.
 *
 * The luci.owsync calls reject on a ubus error (reject: true): when the
 * daemon is not running its object does not exist ("Object not found"), and
 * the page says so instead of showing a number where a status should be.
 */

var callStatus = rpc.declare({
	object: 'luci.owsync',
	method: 'status',
	reject: true
});

var callSync = rpc.declare({
	object: 'luci.owsync',
	method: 'sync',
	reject: true
});

var callSyncPeer = rpc.declare({
	object: 'luci.owsync',
	method: 'sync_peer',
	params: [ 'peer' ],
	reject: true
});

var callInitList = rpc.declare({
	object: 'rc',
	method: 'list',
	params: [ 'name' ],
	expect: { '': {} }
});

/* LuCI's themes colour these label classes: green, blue, amber, red */
var LABEL_CLASS = {
	'in-sync': 'success',
	'syncing': 'notice',
	'pending': 'notice',
	'retrying': 'warning',
	'failing': 'important'
};

var POLL_SECONDS = 5;     /* the page's refresh */
var FOLLOW_SECONDS = 1;   /* the refresh while a "Sync now" runs */
var FOLLOW_LIMIT = 120;   /* give up following a sync after this long */

var now = fmt.now, text = fmt.text;

function sleep(seconds) {
	return new Promise(function(resolve) { window.setTimeout(resolve, seconds * 1000); });
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callStatus(), null),
			L.resolveDefault(uci.load('owsync'), null),
			L.resolveDefault(callInitList('owsync'), {})
		]);
	},

	writable: function() {
		return L.hasViewPermission() !== false;
	},

	running: function(st) {
		return !!(st && st.pid);
	},

	renderDaemon: function(st, enabledInUci, enabledAtBoot) {
		if (!this.running(st)) {
			return E('div', { 'class': 'alert-message warning', 'id': 'owsync-not-running' }, [
				E('strong', {}, _('owsync is not running.')), ' ',
				fmt.notRunningAdvice(enabledInUci, enabledAtBoot)
			]);
		}

		var advice = fmt.notEnabledAdvice(enabledInUci, enabledAtBoot);

		return [
			advice ? E('div', { 'class': 'alert-message warning', 'id': 'owsync-not-enabled' }, text(advice)) : '',
			this.renderConflicts(st),
			E('table', { 'class': 'table', 'id': 'owsync-daemon-table' },
				fmt.daemonRows(st, now()).map(function(row) {
					return E('tr', { 'class': 'tr' + (row[2] ? ' owsync-warning' : '') }, [
						E('td', { 'class': 'td left', 'width': '33%' }, text(row[0])),
						E('td', { 'class': 'td left' }, row[2]
							? E('strong', { 'style': 'color:#c00' }, text(row[1])) : text(row[1]))
					]);
				}))
		];
	},

	renderConflicts: function(st) {
		var c = (st && st.conflicts) || [];

		if (!c.length)
			return '';

		return E('div', { 'class': 'alert-message warning', 'id': 'owsync-status-conflicts' }, [
			E('strong', {}, text(_('Conflicts: %d write(s) made on this router lost to a newer write from a peer.').format(c.length))), ' ',
			text(_('Latest: %s, replaced by %s.').format(c[0].path, c[0].peer || _('this router'))), ' ',
			text(_('What they wrote is kept:')), ' ',
			E('a', { 'href': L.url('admin/services/owsync/history') }, _('see History'))
		]);
	},

	renderPeers: function(st) {
		var self = this, t = now();

		if (!this.running(st))
			return E('p', { 'id': 'owsync-peers' }, E('em', {}, _('No status: the daemon is not running.')));

		var rows = (st && st.peers) || [];
		var table = E('table', { 'class': 'table', 'id': 'owsync-peers' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Peer')),
				E('th', { 'class': 'th' }, _('Health')),
				E('th', { 'class': 'th' }, _('State')),
				E('th', { 'class': 'th' }, _('Last success')),
				E('th', { 'class': 'th' }, _('Last result')),
				E('th', { 'class': 'th' }, _('Protocol')),
				E('th', { 'class': 'th' }, _('Received / sent / deleted')),
				E('th', { 'class': 'th' }, _('Failures')),
				E('th', { 'class': 'th' }, _('Next retry')),
				E('th', { 'class': 'th cbi-section-actions' }, '')
			])
		]);

		rows.forEach(function(peer) {
			var r = fmt.peerRow(peer, t);
			var busy = self.isBusy(peer);

			table.appendChild(E('tr', {
				'class': 'tr owsync-peer owsync-health-' + r.health + (busy ? ' owsync-busy' : ''),
				'data-peer': peer.address
			}, [
				E('td', { 'class': 'td', 'data-title': _('Peer') }, [
					r.address,
					r.source ? E('small', {}, [ ' ', _('from %s').format(r.source) ]) : ''
				]),
				E('td', { 'class': 'td owsync-health', 'data-title': _('Health') },
					E('span', { 'class': 'label ' + (LABEL_CLASS[r.health] || '') + ' owsync-label-' + r.health },
						text(r.healthLabel))),
				E('td', { 'class': 'td owsync-state', 'data-title': _('State') }, text(r.state)),
				E('td', { 'class': 'td owsync-last-success', 'data-title': _('Last success'),
					'title': r.lastSuccessTitle }, text(r.lastSuccess)),
				E('td', { 'class': 'td owsync-result', 'data-title': _('Last result') }, text(r.result)),
				E('td', { 'class': 'td owsync-protocol', 'data-title': _('Protocol'),
					'title': r.protocolTitle || null }, text(r.protocol)),
				E('td', { 'class': 'td owsync-counts', 'data-title': _('Received / sent / deleted') }, text(r.counts)),
				E('td', { 'class': 'td owsync-failures', 'data-title': _('Failures') }, text(r.failures)),
				E('td', { 'class': 'td owsync-next-retry', 'data-title': _('Next retry') }, text(r.nextRetry)),
				E('td', { 'class': 'td cbi-section-actions' },
					E('button', {
						'class': 'btn cbi-button cbi-button-action owsync-sync' + (busy ? ' spinning' : ''),
						'disabled': (busy || !self.writable()) ? '' : null,
						'click': ui.createHandlerFn(self, 'handleSyncPeer', peer.address)
					}, busy ? _('Syncing…') : _('Sync now')))
			]));
		});

		if (!rows.length)
			table.appendChild(E('tr', { 'class': 'tr placeholder' },
				E('td', { 'class': 'td', 'colspan': 10 }, E('em', {}, _('No peer configured.')))));

		return table;
	},

	renderHistory: function(st) {
		var t = now();
		var entries = (st && st.history) || [];

		if (!entries.length)
			return E('p', { 'id': 'owsync-history' }, E('em', {}, this.running(st)
				? _('Nothing has changed since owsync started.') : _('No status: the daemon is not running.')));

		return E('ul', { 'id': 'owsync-history' }, entries.slice(0, 20).map(function(e) {
			return E('li', {
				'class': 'owsync-event ' + (e.ok ? 'owsync-event-ok' : 'owsync-event-failed'),
				'data-peer': e.peer,
				'title': fmt.absoluteTime(e.time) + ' (' + fmt.directionLabel(e.direction) + ')'
			}, text(fmt.historySentence(e, t)));
		}));
	},

	/*
	 * A "Sync now" is over when the peer's session has started after the
	 * click (last_attempt moved) and is no longer running.  A peer that has
	 * gone (a reload removed it), or a daemon that has, ends the wait too.
	 */
	settle: function(st) {
		var waiting = this.waiting;
		var peers = {};

		((st && st.peers) || []).forEach(function(p) { peers[p.address] = p; });

		Object.keys(waiting).forEach(function(addr) {
			var p = peers[addr];

			if (!p || (p.state != 'syncing' && (p.last_attempt || 0) > waiting[addr]))
				delete waiting[addr];
		});
	},

	isBusy: function(peer) {
		return peer.state == 'syncing' || peer.address in this.waiting;
	},

	pending: function() {
		return Object.keys(this.waiting).length > 0;
	},

	update: function(st) {
		var enabled = uci.get('owsync', 'main', 'enabled') == '1';
		var button = this.boxes.syncAll;

		this.last = st;
		this.settle(st);
		dom.content(this.boxes.daemon, this.renderDaemon(st, enabled, this.enabledAtBoot));
		dom.content(this.boxes.peers, this.renderPeers(st));
		dom.content(this.boxes.history, this.renderHistory(st));

		button.disabled = !this.running(st) || !this.writable() || this.pending();
		button.classList.toggle('spinning', this.pending());
	},

	refresh: function() {
		return L.resolveDefault(callStatus(), null).then(L.bind(this.update, this));
	},

	/* Refresh every second until the sessions of the waited-for peers have ended. */
	follow: function() {
		var self = this;
		var deadline = now() + FOLLOW_LIMIT;

		function step() {
			return self.refresh().then(function() {
				if (!self.pending())
					return;
				if (now() > deadline) {
					self.waiting = {};
					return self.update(self.last);
				}
				return sleep(FOLLOW_SECONDS).then(step);
			});
		}

		return sleep(0.2).then(step);
	},

	wait: function(address) {
		var peer = ((this.last && this.last.peers) || []).filter(function(p) {
			return p.address == address;
		})[0];

		this.waiting[address] = (peer && peer.last_attempt) || 0;
	},

	handleSyncPeer: function(address, ev) {
		var self = this;

		this.wait(address);
		if (ev && ev.currentTarget)
			ev.currentTarget.disabled = true;

		return callSyncPeer(address).then(function(reply) {
			if (reply && reply.error) {
				delete self.waiting[address];
				ui.addNotification(null, E('p', text(_('Sync with %s: %s').format(address, reply.error))), 'danger');
				return self.refresh();
			}
			return self.follow();
		}).catch(function(err) {
			delete self.waiting[address];
			ui.addNotification(null, E('p', text(_('Sync with %s failed: %s').format(address, err.message))), 'danger');
			return self.refresh();
		});
	},

	handleSyncAll: function(ev) {
		var self = this;
		var button = this.boxes.syncAll;

		if (button.disabled)
			return Promise.resolve();

		button.disabled = true;
		button.classList.add('spinning');

		return callSync().then(function(reply) {
			if (reply && reply.error)
				throw new Error(reply.error);
			((reply && reply.started) || []).forEach(function(addr) { self.wait(addr); });
			return self.follow();
		}).catch(function(err) {
			self.waiting = {};
			ui.addNotification(null, E('p', text(_('Sync failed: %s').format(err.message))), 'danger');
			return self.refresh();
		});
	},

	render: function(data) {
		var init = (data[2] || {}).owsync;

		this.waiting = {};  /* peer address -> its last_attempt when "Sync now" was clicked */
		this.enabledAtBoot = init ? !!init.enabled : null;
		this.boxes = {
			daemon: E('div', { 'id': 'owsync-daemon' }),
			peers: E('div', { 'id': 'owsync-peers-box' }),
			history: E('div', { 'id': 'owsync-history-box' }),
			/* not ui.createHandlerFn: that re-enables the button when the
			 * handler ends, and this one stays disabled while any sync runs */
			syncAll: E('button', {
				'class': 'btn cbi-button cbi-button-apply',
				'id': 'owsync-sync-all',
				'click': L.bind(this.handleSyncAll, this)
			}, _('Sync all peers now'))
		};
		this.update(data[0]);
		poll.add(L.bind(this.refresh, this), POLL_SECONDS);

		return E('div', { 'class': 'cbi-map', 'id': 'owsync-status' }, [
			E('h2', {}, _('owsync')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Keeps the configuration of the routers of a VRRP group identical, in both directions.')),
			E('div', { 'class': 'cbi-section' }, [ E('h3', {}, _('Daemon')), this.boxes.daemon ]),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, _('Peers')),
				this.boxes.peers,
				E('div', { 'class': 'right' }, this.boxes.syncAll)
			]),
			E('div', { 'class': 'cbi-section' }, [ E('h3', {}, _('Recent activity')), this.boxes.history ])
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
