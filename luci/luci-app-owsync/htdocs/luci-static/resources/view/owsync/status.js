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

var POLL_SECONDS = 5;     /* the page's refresh, under LuCI's poll */
var FOLLOW_SECONDS = 1;   /* the same poll, while a "Sync now" runs */
var FOLLOW_LIMIT = 120;   /* give up following a sync after this long */

var now = fmt.now, text = fmt.text;

/* (the theme's class "hidden": its .table sets display, which beats the hidden attribute) */

/* Text into an existing node, only when it changed (no HTML: a text node). */
function setText(node, s) {
	var t = (s == null) ? '' : String(s);

	if (node.textContent !== t)
		node.textContent = t;
}

function setAttr(node, name, value) {
	if (value == null || value === '')
		node.removeAttribute(name);
	else if (node.getAttribute(name) !== String(value))
		node.setAttribute(name, value);
}

/*
 * The rows of a table kept in place, as LuCI's own status views keep theirs:
 * a row whose key is there already is refilled, a new one is made, one whose
 * key is gone is removed; the order follows the data.  make(key) returns a
 * new row, fill(row, item) sets its cells.  (Also the labels of a cell:
 * selector then names them.)
 */
function updateRows(table, items, keyOf, make, fill, selector) {
	var old = {}, keep = {};

	Array.prototype.forEach.call(table.querySelectorAll(selector || 'tr[data-key]'), function(tr) {
		old[tr.getAttribute('data-key')] = tr;
	});

	items.forEach(function(item) {
		var key = String(keyOf(item));
		var tr = old[key] || make(key);

		tr.setAttribute('data-key', key);
		fill(tr, item);
		keep[key] = true;
		table.appendChild(tr);  /* (moves it last: rows follow the data's order) */
	});

	Object.keys(old).forEach(function(key) {
		if (!keep[key])
			old[key].parentNode.removeChild(old[key]);
	});
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

	/* The advice above the daemon's table: why it is not running, or will not stay running. */
	renderAdvice: function(st, enabledInUci, enabledAtBoot) {
		if (!this.running(st))
			return E('div', { 'class': 'alert-message warning', 'id': 'owsync-not-running' }, [
				E('strong', {}, _('owsync is not running.')), ' ',
				fmt.notRunningAdvice(enabledInUci, enabledAtBoot)
			]);

		var advice = fmt.notEnabledAdvice(enabledInUci, enabledAtBoot);

		return advice ? E('div', { 'class': 'alert-message warning', 'id': 'owsync-not-enabled' }, text(advice)) : '';
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

	/* [label, value, warning?] rows; a warning's value is bold, and its row marked. */
	updateDaemon: function(st) {
		var rows = this.running(st) ? fmt.daemonRows(st, now()) : [];

		this.boxes.daemonTable.classList.toggle('hidden', !rows.length);
		updateRows(this.boxes.daemonTable, rows, function(row) { return row[0]; }, function() {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }),
				E('td', { 'class': 'td left' }, E('span'))
			]);
		}, function(tr, row) {
			var cell = tr.lastElementChild, value = cell.firstElementChild;

			setText(tr.firstElementChild, row[0]);
			tr.classList.toggle('owsync-warning', !!row[2]);
			if ((value.tagName == 'STRONG') != !!row[2]) {
				value = E(row[2] ? 'strong' : 'span');
				dom.content(cell, value);
			}
			setText(value, row[1]);
		});
	},

	/* This router's role per VRRP instance (keepalived), when it told of any. */
	updateVrrp: function(st) {
		var rows = this.running(st) ? fmt.vrrpRows(st.vrrp, now()) : [];

		this.boxes.vrrp.classList.toggle('hidden', !rows.length);
		updateRows(this.boxes.vrrpTable, rows, function(r) { return r.instance; }, function() {
			return E('tr', { 'class': 'tr owsync-vrrp' }, [
				E('td', { 'class': 'td owsync-vrrp-instance', 'data-title': _('Instance') }),
				E('td', { 'class': 'td owsync-vrrp-role', 'data-title': _('Role') }, E('span', { 'class': 'label' })),
				E('td', { 'class': 'td owsync-vrrp-since', 'data-title': _('Since') })
			]);
		}, function(tr, r) {
			var label = tr.children[1].firstElementChild;

			setText(tr.children[0], r.instance);
			label.className = 'label' + (r.roleClass ? ' ' + r.roleClass : '') + ' owsync-role-' + r.role.toLowerCase();
			setText(label, r.role);
			setText(tr.children[2], r.since);
			setAttr(tr.children[2], 'title', r.sinceTitle);
		});
	},

	/*
	 * A row per sync group: its directory, state (and why it waits), files,
	 * last change, actions, and each peer's state for it (synced, pending,
	 * absent: the peer has no such group, v1: a 1.2.0 peer syncs main only).
	 */
	makeGroupRow: function(name) {
		var cell = function(cls, title, child) {
			return E('td', { 'class': 'td ' + cls, 'data-title': title }, child || []);
		};

		return E('tr', { 'class': 'tr owsync-group', 'data-group': name }, [
			cell('owsync-group-name', _('Group'), E('strong')),
			cell('owsync-group-dir', _('Directory'), E('code')),
			cell('owsync-group-state', _('State'), [ E('span', { 'class': 'label' }), E('small') ]),
			cell('owsync-group-files', _('Files')),
			cell('owsync-group-last-change', _('Last change')),
			cell('owsync-group-actions', _('Actions')),
			cell('owsync-group-peers', _('Peers'))
		]);
	},

	fillGroupRow: function(tr, g, t) {
		var r = fmt.groupRow(g, t);
		var c = tr.children;
		var label = c[2].firstElementChild;

		tr.className = 'tr owsync-group owsync-group-' + r.state;
		setText(c[0].firstElementChild, r.name);
		setText(c[1].firstElementChild, r.dir);
		label.className = 'label' + (r.stateClass ? ' ' + r.stateClass : '') + ' owsync-group-label-' + r.state;
		setText(label, r.stateLabel);
		setText(c[2].lastElementChild, r.reason ? ' ' + r.reason : '');
		setText(c[3], r.files);
		setText(c[4], r.lastChange);
		setAttr(c[4], 'title', r.lastChangeTitle);
		setText(c[5], r.actions);
		/* a label per peer, kept in place like the rows */
		updateRows(c[6], r.peers, function(p) { return p.address; }, function() {
			/* a line per peer */
			return E('div', { 'class': 'owsync-group-peer' }, [ E('span'), ' ', E('span', { 'class': 'label' }) ]);
		}, function(span, p) {
			var plabel = span.children[1];

			span.setAttribute('data-peer', p.address);
			setText(span.firstElementChild, p.address);
			plabel.className = 'label' + (p.labelClass ? ' ' + p.labelClass : '') + ' owsync-group-peer-' + p.state;
			setText(plabel, p.label);
			setAttr(span, 'title', p.title);
		}, '[data-key]');
	},

	updateGroups: function(st) {
		var self = this, t = now();
		var groups = (this.running(st) && st.groups) || [];
		var shown = fmt.hasGroups(groups);

		this.boxes.groups.classList.toggle('hidden', !shown);
		updateRows(this.boxes.groupsTable, shown ? groups : [], function(g) { return g.name; },
			L.bind(this.makeGroupRow, this), function(tr, g) { self.fillGroupRow(tr, g, t); });
	},

	makePeerRow: function(address) {
		var cell = function(cls, title, child) {
			return E('td', { 'class': 'td ' + cls, 'data-title': title }, child || []);
		};

		return E('tr', { 'class': 'tr owsync-peer', 'data-peer': address }, [
			cell('owsync-address', _('Peer'), [ E('span'), E('small') ]),
			cell('owsync-health', _('Health'), E('span', { 'class': 'label' })),
			cell('owsync-state', _('State')),
			cell('owsync-last-success', _('Last success')),
			cell('owsync-result', _('Last result')),
			cell('owsync-protocol', _('Protocol')),
			cell('owsync-vrrp', _('VRRP')),
			cell('owsync-counts', _('Received / sent / deleted')),
			cell('owsync-failures', _('Failures')),
			cell('owsync-next-retry', _('Next retry')),
			/* not ui.createHandlerFn: the poll, not the call, says when the sync is over */
			E('td', { 'class': 'td cbi-section-actions' }, E('button', {
				'class': 'btn cbi-button cbi-button-action owsync-sync',
				'click': L.bind(this.handleSyncPeer, this, address)
			}, _('Sync now')))
		]);
	},

	fillPeerRow: function(tr, peer, t) {
		var r = fmt.peerRow(peer, t);
		var busy = this.isBusy(peer);
		var c = tr.children;
		var label = c[1].firstElementChild, button = c[10].firstElementChild;

		tr.className = 'tr owsync-peer owsync-health-' + r.health + (busy ? ' owsync-busy' : '');
		setText(c[0].firstElementChild, r.address);
		setText(c[0].lastElementChild, r.source ? ' ' + _('from %s').format(r.source) : '');
		label.className = 'label ' + (LABEL_CLASS[r.health] || '') + ' owsync-label-' + r.health;
		setText(label, r.healthLabel);
		setText(c[2], r.state);
		setText(c[3], r.lastSuccess);
		setAttr(c[3], 'title', r.lastSuccessTitle);
		setText(c[4], r.result);
		setText(c[5], r.protocol);
		setAttr(c[5], 'title', r.protocolTitle);
		setText(c[6], r.vrrp);
		setText(c[7], r.counts);
		setText(c[8], r.failures);
		setText(c[9], r.nextRetry);
		button.disabled = busy || !this.writable();
		button.classList.toggle('spinning', busy);
		setText(button, busy ? _('Syncing…') : _('Sync now'));
	},

	updatePeers: function(st) {
		var self = this, t = now();
		var running = this.running(st);
		var peers = running ? ((st && st.peers) || []) : [];

		this.boxes.peersTable.classList.toggle('hidden', !running);
		this.boxes.noPeers.classList.toggle('hidden', !running || peers.length > 0);
		this.boxes.noStatus.classList.toggle('hidden', running);
		updateRows(this.boxes.peersTable, peers, function(p) { return p.address; },
			L.bind(this.makePeerRow, this), function(tr, peer) { self.fillPeerRow(tr, peer, t); });
	},

	updateHistory: function(st) {
		var t = now();
		var entries = (st && st.history) || [];

		if (!entries.length)
			return dom.content(this.boxes.history, E('p', { 'id': 'owsync-history' }, E('em', {}, this.running(st)
				? _('Nothing has changed since owsync started.') : _('No status: the daemon is not running.'))));

		dom.content(this.boxes.history, E('ul', { 'id': 'owsync-history' }, entries.slice(0, 20).map(function(e) {
			return E('li', {
				'class': 'owsync-event ' + (e.ok ? 'owsync-event-ok' : 'owsync-event-failed'),
				'data-peer': e.peer,
				'title': fmt.absoluteTime(e.time) + ' (' + fmt.directionLabel(e.direction) + ')'
			}, text(fmt.historySentence(e, t)));
		})));
	},

	/*
	 * A "Sync now" is over when the peer's session has started after the
	 * click (last_attempt moved) and is no longer running.  A peer that has
	 * gone (a reload removed it), or a daemon that has, ends the wait too;
	 * so does FOLLOW_LIMIT.
	 */
	settle: function(st) {
		var waiting = this.waiting;
		var peers = {};

		((st && st.peers) || []).forEach(function(p) { peers[p.address] = p; });

		Object.keys(waiting).forEach(function(addr) {
			var p = peers[addr];

			if (!p || (p.state != 'syncing' && (p.last_attempt || 0) > waiting[addr].attempt)
			    || now() > waiting[addr].until)
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
		dom.content(this.boxes.advice, [
			this.renderAdvice(st, enabled, this.enabledAtBoot),
			this.running(st) ? this.renderConflicts(st) : ''
		]);
		this.updateDaemon(st);
		this.updateGroups(st);
		this.updateVrrp(st);
		this.updatePeers(st);
		this.updateHistory(st);

		/* the theme greys a disabled button: nothing to sync with while no daemon runs */
		button.disabled = !this.running(st) || !this.writable() || this.pending();
		button.classList.toggle('spinning', this.pending());
		this.pace();
	},

	/* One poll, under LuCI's: every POLL_SECONDS, every FOLLOW_SECONDS while a sync is followed. */
	pace: function() {
		var seconds = this.pending() ? FOLLOW_SECONDS : POLL_SECONDS;

		if (this.pollSeconds == seconds)
			return;
		if (this.pollSeconds)
			poll.remove(this.pollFn);
		poll.add(this.pollFn, seconds);
		this.pollSeconds = seconds;
	},

	refresh: function() {
		return L.resolveDefault(callStatus(), null).then(L.bind(this.update, this));
	},

	wait: function(address) {
		var peer = ((this.last && this.last.peers) || []).filter(function(p) {
			return p.address == address;
		})[0];

		this.waiting[address] = { attempt: (peer && peer.last_attempt) || 0, until: now() + FOLLOW_LIMIT };
	},

	handleSyncPeer: function(address, ev) {
		var self = this;

		if (ev && ev.currentTarget && ev.currentTarget.disabled)
			return Promise.resolve();
		this.wait(address);
		this.update(this.last);  /* the row says "Syncing…" at once */

		return callSyncPeer(address).then(function(reply) {
			if (reply && reply.error) {
				delete self.waiting[address];
				ui.addNotification(null, E('p', text(_('Sync with %s: %s').format(address, reply.error))), 'danger');
			}
			return self.refresh();
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
			return self.refresh();
		}).catch(function(err) {
			self.waiting = {};
			ui.addNotification(null, E('p', text(_('Sync failed: %s').format(err.message))), 'danger');
			return self.refresh();
		});
	},

	render: function(data) {
		var init = (data[2] || {}).owsync;
		var th = function(title, cls) { return E('th', { 'class': 'th' + (cls ? ' ' + cls : '') }, title); };

		this.waiting = {};  /* peer address -> {attempt: its last_attempt at the click, until} */
		this.enabledAtBoot = init ? !!init.enabled : null;
		this.pollFn = L.bind(this.refresh, this);
		this.boxes = {
			advice: E('div', { 'id': 'owsync-daemon-advice' }),
			daemonTable: E('table', { 'class': 'table', 'id': 'owsync-daemon-table' }),
			vrrpTable: E('table', { 'class': 'table', 'id': 'owsync-vrrp' }, E('tr', { 'class': 'tr table-titles' }, [
				th(_('Instance')), th(_('Role')), th(_('Since'))
			])),
			peersTable: E('table', { 'class': 'table', 'id': 'owsync-peers' }, E('tr', { 'class': 'tr table-titles' }, [
				th(_('Peer')), th(_('Health')), th(_('State')), th(_('Last success')), th(_('Last result')),
				th(_('Protocol')), th(_('VRRP')), th(_('Received / sent / deleted')), th(_('Failures')),
				th(_('Next retry')), th('', 'cbi-section-actions')
			])),
			noPeers: E('p', { 'id': 'owsync-no-peers' }, E('em', {}, _('No peer configured.'))),
			noStatus: E('p', { 'id': 'owsync-peers-none' }, E('em', {}, _('No status: the daemon is not running.'))),
			history: E('div', { 'id': 'owsync-history-box' }),
			/* not ui.createHandlerFn: that re-enables the button when the
			 * handler ends, and this one stays disabled while any sync runs */
			syncAll: E('button', {
				'class': 'btn cbi-button cbi-button-apply',
				'id': 'owsync-sync-all',
				'disabled': '',
				'click': L.bind(this.handleSyncAll, this)
			}, _('Sync all peers now'))
		};
		this.boxes.groupsTable = E('table', { 'class': 'table', 'id': 'owsync-groups' }, E('tr', { 'class': 'tr table-titles' }, [
			th(_('Group')), th(_('Directory')), th(_('State')), th(_('Files')), th(_('Last change')),
			th(_('Actions')), th(_('Peers'))
		]));
		this.boxes.groups = E('div', { 'class': 'cbi-section hidden', 'id': 'owsync-groups-box' }, [
			E('h3', {}, _('Sync groups')),
			E('div', { 'class': 'cbi-section-descr' }, _('Each group syncs one directory with every peer; the main group is the one above. Settings adds and edits groups.')),
			this.boxes.groupsTable
		]);
		this.boxes.vrrp = E('div', { 'class': 'cbi-section', 'id': 'owsync-vrrp-box' }, [
			E('h3', {}, _('VRRP')),
			E('div', { 'class': 'cbi-section-descr' }, _('This router\'s role in each VRRP instance, as keepalived last told it.')),
			this.boxes.vrrpTable
		]);
		this.update(data[0]);

		return E('div', { 'class': 'cbi-map', 'id': 'owsync-status' }, [
			E('h2', {}, _('owsync')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Keeps the configuration of the routers of a VRRP group identical, in both directions.')),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, _('Daemon')),
				E('div', { 'id': 'owsync-daemon' }, [ this.boxes.advice, this.boxes.daemonTable ])
			]),
			this.boxes.groups,
			this.boxes.vrrp,
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, _('Peers')),
				this.boxes.peersTable,
				this.boxes.noPeers,
				this.boxes.noStatus,
				E('div', { 'class': 'right' }, this.boxes.syncAll)
			]),
			E('div', { 'class': 'cbi-section' }, [ E('h3', {}, _('Recent activity')), this.boxes.history ])
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
