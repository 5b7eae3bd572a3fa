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
 */

var callStatus = rpc.declare({
	object: 'luci.owsync',
	method: 'status'
});

var callSync = rpc.declare({
	object: 'luci.owsync',
	method: 'sync'
});

var callSyncPeer = rpc.declare({
	object: 'luci.owsync',
	method: 'sync_peer',
	params: [ 'peer' ]
});

var callInitList = rpc.declare({
	object: 'rc',
	method: 'list',
	params: [ 'name' ],
	expect: { '': {} }
});

var POLL_SECONDS = 5;

function now() {
	return Date.now() / 1000;
}

return view.extend({
	/* peer address -> last_attempt seen when its "Sync now" was clicked */
	waiting: {},

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

	renderDaemon: function(st, enabledInUci, enabledAtBoot) {
		if (!st || !st.pid) {
			return E('div', { 'class': 'alert-message warning', 'id': 'owsync-not-running' }, [
				E('strong', {}, _('owsync is not running.')), ' ',
				fmt.notRunningAdvice(enabledInUci, enabledAtBoot)
			]);
		}

		return E('table', { 'class': 'table', 'id': 'owsync-daemon-table' },
			fmt.daemonRows(st, now()).map(function(row) {
				return E('tr', { 'class': 'tr' + (row[2] ? ' owsync-warning' : '') }, [
					E('td', { 'class': 'td left', 'width': '33%' }, row[0]),
					E('td', { 'class': 'td left' }, row[2]
						? E('strong', { 'style': 'color:#c00' }, row[1]) : row[1])
				]);
			}));
	},

	renderPeers: function(st) {
		var self = this, t = now();
		var rows = (st && st.peers) || [];
		var table = E('table', { 'class': 'table', 'id': 'owsync-peers' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Peer')),
				E('th', { 'class': 'th' }, _('Health')),
				E('th', { 'class': 'th' }, _('State')),
				E('th', { 'class': 'th' }, _('Last success')),
				E('th', { 'class': 'th' }, _('Last result')),
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
				'class': 'tr owsync-peer owsync-health-' + r.health,
				'data-peer': peer.address
			}, [
				E('td', { 'class': 'td', 'data-title': _('Peer') }, [
					r.address,
					r.source ? E('small', {}, [ ' ', _('from %s').format(r.source) ]) : ''
				]),
				E('td', { 'class': 'td owsync-health', 'data-title': _('Health') },
					E('span', { 'class': 'label owsync-label-' + r.health }, r.healthLabel)),
				E('td', { 'class': 'td', 'data-title': _('State') }, r.state),
				E('td', { 'class': 'td owsync-last-success', 'data-title': _('Last success'),
					'title': r.lastSuccessTitle }, r.lastSuccess),
				E('td', { 'class': 'td owsync-result', 'data-title': _('Last result') }, r.result),
				E('td', { 'class': 'td', 'data-title': _('Received / sent / deleted') }, r.counts),
				E('td', { 'class': 'td', 'data-title': _('Failures') }, r.failures),
				E('td', { 'class': 'td', 'data-title': _('Next retry') }, r.nextRetry),
				E('td', { 'class': 'td cbi-section-actions' },
					E('button', {
						'class': 'btn cbi-button cbi-button-action owsync-sync',
						'disabled': (busy || !self.writable()) ? '' : null,
						'click': ui.createHandlerFn(self, 'handleSyncPeer', peer.address)
					}, busy ? _('Syncing…') : _('Sync now')))
			]));
		});

		if (!rows.length)
			table.appendChild(E('tr', { 'class': 'tr placeholder' },
				E('td', { 'class': 'td' }, E('em', {}, _('No peer configured.')))));

		return table;
	},

	renderHistory: function(st) {
		var t = now();
		var entries = (st && st.history) || [];

		if (!entries.length)
			return E('p', { 'id': 'owsync-history' }, E('em', {}, _('Nothing has changed since owsync started.')));

		return E('ul', { 'id': 'owsync-history' }, entries.slice(0, 20).map(function(e) {
			return E('li', {
				'class': 'owsync-event ' + (e.ok ? 'owsync-event-ok' : 'owsync-event-failed'),
				'title': fmt.absoluteTime(e.time) + ' (' + e.direction + ')'
			}, fmt.historySentence(e, t));
		}));
	},

	isBusy: function(peer) {
		if (peer.state == 'syncing')
			return true;
		if (!(peer.address in this.waiting))
			return false;
		if ((peer.last_attempt || 0) > this.waiting[peer.address])
			delete this.waiting[peer.address];  /* that session has ended */

		return peer.address in this.waiting;
	},

	update: function(st) {
		var enabled = uci.get('owsync', 'main', 'enabled') == '1';

		this.last = st;
		dom.content(this.boxes.daemon, this.renderDaemon(st, enabled, this.enabledAtBoot));
		dom.content(this.boxes.peers, this.renderPeers(st));
		dom.content(this.boxes.history, this.renderHistory(st));
		this.boxes.syncAll.disabled = !(st && st.pid) || !this.writable();
	},

	refresh: function() {
		return L.resolveDefault(callStatus(), null).then(L.bind(this.update, this));
	},

	handleSyncPeer: function(address, ev) {
		var self = this;
		var st = this.last || {};
		var peer = (st.peers || []).filter(function(p) { return p.address == address; })[0];

		this.waiting[address] = (peer && peer.last_attempt) || 0;
		ev.currentTarget.disabled = true;

		return callSyncPeer(address).then(function(reply) {
			if (reply && reply.error) {
				delete self.waiting[address];
				ui.addNotification(null, E('p', _('Sync with %s: %s').format(address, reply.error)), 'danger');
			}
			return self.refresh();
		}).catch(function(err) {
			delete self.waiting[address];
			ui.addNotification(null, E('p', _('Sync with %s failed: %s').format(address, err.message)), 'danger');
		});
	},

	handleSyncAll: function(ev) {
		var self = this;

		((this.last && this.last.peers) || []).forEach(function(p) {
			self.waiting[p.address] = p.last_attempt || 0;
		});

		return callSync().then(function() {
			return self.refresh();
		}).catch(function(err) {
			self.waiting = {};
			ui.addNotification(null, E('p', _('Sync failed: %s').format(err.message)), 'danger');
		});
	},

	render: function(data) {
		var init = (data[2] || {}).owsync;

		this.enabledAtBoot = init ? !!init.enabled : null;
		this.boxes = {
			daemon: E('div', { 'id': 'owsync-daemon' }),
			peers: E('div', { 'id': 'owsync-peers-box' }),
			history: E('div', { 'id': 'owsync-history-box' }),
			syncAll: E('button', {
				'class': 'btn cbi-button cbi-button-apply',
				'id': 'owsync-sync-all',
				'click': ui.createHandlerFn(this, 'handleSyncAll')
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
