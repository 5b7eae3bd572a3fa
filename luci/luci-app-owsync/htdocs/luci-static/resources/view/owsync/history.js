'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require ui';
'require owsync.format as fmt';

/*
 * Services → owsync → History: the versions the daemon kept of the files a
 * peer's write, a deletion, an edit or a restore replaced (ubus luci.owsync
 * versions, refreshed by poll), newest first; for each, its differences from
 * the current file (diff) and, for a user with the write grant, Restore.
 * Each sync group keeps its own versions: a Group column says whose, and a
 * filter shows one group's alone (a version of a group besides main is
 * named GROUP:ID to diff and restore).
 *
 * Everything that comes from the daemon (paths, a peer's file names, the
 * diff's lines) goes in as text nodes; so does every sentence that has such
 * text formatted into it.  The modal's title is LuCI's innerHTML, so it is
 * always a fixed string.
 */

var callVersions = rpc.declare({
	object: 'luci.owsync',
	method: 'versions',
	reject: true
});

var callDiff = rpc.declare({
	object: 'luci.owsync',
	method: 'diff',
	params: [ 'id' ],
	reject: true
});

var callRestore = rpc.declare({
	object: 'luci.owsync',
	method: 'restore',
	params: [ 'id' ],
	reject: true
});

var POLL_SECONDS = 10;

/* LuCI's themes colour these label classes (see status.js) */
var CONFLICT_CLASS = 'warning';

/* A diff line's kind, marked with the theme's own emphasis (no colour of ours) */
var DIFF_TAGS = {
	head: 'strong',
	hunk: 'strong',
	note: 'em'
};

var now = fmt.now, text = fmt.text;

return view.extend({
	load: function() {
		return this.fetch();
	},

	/* {versions, store, stores} or {error: the rpc's message} */
	fetch: function() {
		return callVersions().then(function(reply) {
			if (reply && reply.error)
				return { error: String(reply.error) };
			return {
				versions: (reply && Array.isArray(reply.versions)) ? reply.versions : [],
				store: (reply && reply.store) || null,
				stores: (reply && L.isObject(reply.stores)) ? reply.stores : null,
				total: (reply && reply.total != null) ? reply.total : null
			};
		}, function(err) {
			return { error: (err && err.message) || String(err) };
		});
	},

	writable: function() {
		return L.hasViewPermission() !== false;
	},

	renderError: function(message) {
		var absent = /Object not found/.test(message);

		return E('div', { 'class': 'alert-message warning', 'id': 'owsync-history-error' }, absent
			? [ E('strong', {}, _('owsync is not running.')), ' ', _('No kept versions to show.') ]
			: text(_('Cannot list the kept versions: %s').format(message)));
	},

	/* The versions of the group chosen in the filter ('' for every group). */
	shown: function(data) {
		var group = this.group;

		return group ? data.versions.filter(function(v) { return (v.group || fmt.MAIN_GROUP) == group; }) : data.versions;
	},

	/* A choice of group, once a group besides main keeps versions (or a store). */
	updateFilter: function(data) {
		var groups = data.error ? [] : fmt.versionGroups(data.versions, data.stores);
		var select = this.boxes.filter;
		var wanted = [ '' ].concat(groups);
		var have = Array.prototype.map.call(select.options, function(o) { return o.value; });

		if (groups.indexOf(this.group) < 0)
			this.group = '';
		if (have.join('\n') != wanted.join('\n'))
			dom.content(select, wanted.map(function(name) {
				return E('option', { 'value': name }, text(name || _('All groups')));
			}));
		select.value = this.group;
		this.boxes.filterBox.classList.toggle('hidden', !fmt.hasGroups(groups.map(function(name) { return { name: name }; })));
	},

	handleFilter: function(ev) {
		this.group = ev.target.value;
		this.update(this.data);
	},

	renderStore: function(data) {
		var conflicts = this.shown(data).filter(function(v) { return v.reason == 'conflict'; }).length;
		var store = (this.group && data.stores) ? data.stores[this.group] : data.store;
		var count = this.group ? this.shown(data).length : (data.total != null ? data.total : data.versions.length);

		return [
			E('p', { 'id': 'owsync-store' }, text(fmt.storeSummary(store, count))),
			conflicts ? E('div', { 'class': 'alert-message warning', 'id': 'owsync-conflicts' },
				text(_('%d conflict(s): a write made here lost to a newer write from a peer before it reached any peer. The losing content is kept below; Diff shows what differs, Restore brings it back.').format(conflicts)))
				: ''
		];
	},

	renderVersions: function(data) {
		var self = this, t = now(), ro = !this.writable();
		var versions = this.shown(data);

		if (!versions.length)
			return E('p', { 'id': 'owsync-versions-empty' }, E('em', {},
				_('No version is kept yet. When a peer\'s write or deletion, an edit here or a restore replaces a file, its previous content is kept and listed here.')));

		var table = E('table', { 'class': 'table', 'id': 'owsync-versions' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Kept')),
				E('th', { 'class': 'th' }, _('Group')),
				E('th', { 'class': 'th' }, _('File')),
				E('th', { 'class': 'th' }, _('What happened')),
				E('th', { 'class': 'th' }, _('By')),
				E('th', { 'class': 'th' }, _('Size')),
				E('th', { 'class': 'th cbi-section-actions' }, '')
			])
		]);

		versions.forEach(function(v) {
			var r = fmt.versionRow(v, t);

			table.appendChild(E('tr', {
				'class': 'tr owsync-version owsync-reason-' + r.reason + (r.conflict ? ' owsync-conflict' : ''),
				'data-id': r.ref,
				'data-group': r.group
			}, [
				E('td', { 'class': 'td owsync-kept', 'data-title': _('Kept'), 'title': r.keptTitle,
					'style': 'white-space:nowrap' }, text(r.kept)),
				E('td', { 'class': 'td owsync-group', 'data-title': _('Group') }, text(r.group)),
				E('td', { 'class': 'td owsync-path', 'data-title': _('File') }, E('code', {}, text(r.path))),
				E('td', { 'class': 'td owsync-reason', 'data-title': _('What happened') }, [
					r.conflict ? E('span', { 'class': 'label ' + CONFLICT_CLASS + ' owsync-label-conflict' },
						text(r.reasonLabel)) : '',
					r.conflict ? ' ' : '',
					E('span', {}, text(r.reasonText))
				]),
				E('td', { 'class': 'td owsync-by', 'data-title': _('By') }, text(r.by)),
				E('td', { 'class': 'td owsync-size', 'data-title': _('Size'), 'style': 'white-space:nowrap' }, text(r.size)),
				/* LuCI's themes lay out the buttons of a div in this cell side by side */
				E('td', { 'class': 'td cbi-section-actions' }, E('div', {}, [
					E('button', {
						'class': 'btn cbi-button cbi-button-action owsync-diff',
						'click': ui.createHandlerFn(self, 'handleDiff', v)
					}, _('Diff')),
					ro ? '' : E('button', {
						'class': 'btn cbi-button cbi-button-apply owsync-restore',
						'click': ui.createHandlerFn(self, 'handleRestore', v)
					}, _('Restore'))
				]))
			]));
		});

		return table;
	},

	update: function(data) {
		this.data = data;
		this.updateFilter(data);
		if (data.error) {
			dom.content(this.boxes.store, this.renderError(data.error));
			dom.content(this.boxes.versions, '');
			return;
		}

		dom.content(this.boxes.store, this.renderStore(data));
		dom.content(this.boxes.versions, this.renderVersions(data));
	},

	refresh: function() {
		return this.fetch().then(L.bind(this.update, this));
	},

	/* What the version is, in a line: "dhcp, version 12, kept 2026-… (conflict …), by 192.168.1.2" */
	describe: function(v) {
		var r = fmt.versionRow(v, now());

		return _('%s: version %s, written %s, kept %s (%s), by %s').format(
			r.path, r.ref, r.written || '?', r.keptTitle || '?', r.reasonText, r.by);
	},

	renderDiff: function(v, d) {
		var self = this, body = [];
		var lines = fmt.diffLines(d.diff);

		body.push(E('p', { 'class': 'owsync-diff-what' }, text(this.describe(v))));

		if (d.current == 'absent')
			body.push(E('p', { 'class': 'owsync-diff-absent' },
				text(_('The file does not exist here now; restoring this version brings it back.'))));
		else if (d.current && d.current != 'present')
			body.push(E('p', { 'class': 'owsync-diff-unreadable' },
				text(_('The current file cannot be read (%s): there is nothing to compare.').format(d.current))));

		if (!d.text)
			body.push(E('p', { 'class': 'owsync-diff-binary' },
				text(_('This version is not text (%s): there are no lines to compare.').format(fmt.size(v.size)))));
		else if (!lines.length && d.current == 'present')
			body.push(E('p', { 'class': 'owsync-diff-same' },
				text(_('The current file is identical to this version.'))));

		if (d.text && lines.length) {
			body.push(E('p', {}, text(_('Lines starting with "-" are in this version only, lines starting with "+" in the current file only.'))));
			body.push(E('pre', {
				'class': 'owsync-diff-text',
				'style': 'white-space:pre;overflow:auto;max-height:60vh;font-size:90%'
			}, lines.map(function(l) {
				return E(DIFF_TAGS[l.kind] || 'span', { 'class': 'owsync-diff-' + l.kind }, text(l.text + '\n'));
			})));
		}

		if (d.truncated)
			body.push(E('p', { 'class': 'owsync-diff-truncated' },
				E('em', {}, text(_('The differences are longer than shown here: the rest was cut.')))));

		body.push(E('div', { 'class': 'right' }, [
			E('button', { 'class': 'btn owsync-modal-close', 'click': ui.hideModal }, _('Close')),
			this.writable() ? ' ' : '',
			this.writable() ? E('button', {
				'class': 'btn cbi-button cbi-button-apply owsync-diff-restore',
				'click': function() { self.handleRestore(v); }
			}, _('Restore this version…')) : ''
		]));

		return body;
	},

	handleDiff: function(v, ev) {
		var self = this;

		return callDiff(fmt.versionRef(v)).then(function(d) {
			if (d && d.error)
				throw new Error(d.error);
			ui.showModal(_('Differences from the current file'), self.renderDiff(v, d || {}), 'owsync-diff-modal');
		}).catch(function(err) {
			ui.addNotification(null, E('p', text(_('Cannot show the differences of %s: %s').format(v.path, err.message))), 'danger');
			return self.refresh();
		});
	},

	/* Asks first: a restore overwrites the current file (which is kept as a version itself). */
	handleRestore: function(v, ev) {
		ui.showModal(_('Restore a kept version'), [
			E('p', { 'class': 'owsync-restore-what' }, text(
				_('Write version %s back to %s?').format(fmt.versionRef(v), v.path))),
			E('p', {}, text(this.describe(v))),
			E('p', {}, text(_('The current content, if there is one, is kept as a version first, so a restore can be undone here. The peers receive the restored file like any other change.'))),
			E('div', { 'class': 'right' }, [
				E('button', { 'class': 'btn owsync-modal-close', 'click': ui.hideModal }, _('Cancel')), ' ',
				E('button', {
					'class': 'btn cbi-button cbi-button-negative important owsync-restore-confirm',
					'click': ui.createHandlerFn(this, 'doRestore', v)
				}, _('Restore'))
			])
		], 'owsync-restore-modal');

		return Promise.resolve();
	},

	doRestore: function(v, ev) {
		var self = this;

		var id = fmt.versionRef(v);

		return callRestore(id).then(function(reply) {
			ui.hideModal();
			if (reply && reply.error)
				throw new Error(reply.error);
			if (reply && reply.unchanged)
				ui.addNotification(null, E('p', text(_('%s already has the content of version %s.').format(reply.restored || v.path, id))), 'info');
			else
				ui.addNotification(null, E('p', text(_('%s restored from version %s.').format((reply && reply.restored) || v.path, id))), 'info');
			return self.refresh();
		}).catch(function(err) {
			ui.hideModal();
			ui.addNotification(null, E('p', text(_('Restoring %s failed: %s').format(v.path, err.message))), 'danger');
			return self.refresh();
		});
	},

	render: function(data) {
		this.group = '';  /* the filter's group; '' for every group */
		this.boxes = {
			store: E('div', { 'id': 'owsync-store-box' }),
			versions: E('div', { 'id': 'owsync-versions-box' }),
			filter: E('select', { 'id': 'owsync-group-filter', 'class': 'cbi-input-select',
				'change': L.bind(this.handleFilter, this) })
		};
		this.boxes.filterBox = E('div', { 'class': 'cbi-value hidden', 'id': 'owsync-group-filter-box' }, [
			E('label', { 'class': 'cbi-value-title', 'for': 'owsync-group-filter' }, _('Group')),
			E('div', { 'class': 'cbi-value-field' }, this.boxes.filter)
		]);
		this.update(data);
		poll.add(L.bind(this.refresh, this), POLL_SECONDS);

		return E('div', { 'class': 'cbi-map', 'id': 'owsync-history-view' }, [
			E('h2', {}, _('owsync')),
			E('div', { 'class': 'cbi-map-descr' },
				_('The previous contents of the synced files, kept when a peer\'s write or deletion, an edit on this router or a restore replaced them. A conflict is a write made here that lost to a newer write from a peer before any peer had it.')),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, _('History')),
				this.boxes.filterBox,
				this.boxes.store,
				this.boxes.versions
			])
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
