'use strict';
'require view';
'require dom';
'require form';
'require rpc';
'require ui';
'require uci';
'require owsync.format as fmt';
'require owsync.examples as examples';

/*
 * Services → owsync → Settings: the owsync.main section of UCI, saved with
 * LuCI's usual Save & Apply (the init script's reload trigger sends the
 * daemon a SIGHUP), and the pre-shared key.  The key lives in a root-only
 * file, not in UCI; this page only learns whether one is set and its
 * fingerprint (rpcd plugin owsync.key), and may send a new one.
 *
 * The Groups table edits the `config group 'NAME'` sections: a directory
 * besides /etc/config, its patterns and the services to reload or restart
 * when its files arrive.  Under it, the shipped examples (owsync/examples.js,
 * generated from owsync/core/examples.py) are ready choices: one click adds
 * the section with the example's values, Save & Apply starts it.
 */

var callKeyInfo = rpc.declare({
	object: 'owsync.key',
	method: 'info',
	reject: true
});

var callKeySet = rpc.declare({
	object: 'owsync.key',
	method: 'set',
	params: [ 'key' ],
	reject: true
});

var HEX64 = /^[0-9a-fA-F]{64}$/;

/* The options of a group section that a ready choice sets (lists as lists). */
var GROUP_OPTIONS = [ 'dir', 'include', 'exclude', 'reload', 'restart' ];

/* An init script's name (/etc/init.d/NAME): the daemon refuses anything else. */
var SERVICE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/* Text from the server goes in as a text node: a lone string child of E() is HTML. */
var text = fmt.text;

function randomKey() {
	var bytes = new Uint8Array(32);

	window.crypto.getRandomValues(bytes);

	return Array.prototype.map.call(bytes, function(b) {
		return (b < 16 ? '0' : '') + b.toString(16);
	}).join('');
}

return view.extend({
	load: function() {
		return Promise.all([
			uci.load('owsync'),
			L.resolveDefault(callKeyInfo(), null)
		]);
	},

	writable: function() {
		return L.hasViewPermission() !== false;
	},

	keyText: function(info) {
		if (info == null)
			return _('Cannot tell whether a key is set: the owsync.key plugin of rpcd did not answer.');
		if (info.set)
			return _('A key is set. Fingerprint: %s (the same on every router of the group)').format(info.fingerprint);
		if (info.error)
			return _('The key file is unusable: %s').format(info.error);

		return _('No key is set: owsync cannot start encrypted.');
	},

	handleGenerate: function(input, ev) {
		input.value = randomKey();
		input.type = 'text';
		input.focus();
		input.select();
		ui.addNotification(null, E('p', text(
			_('A new key is in the field, shown this once. Copy it to the other routers of the group (Settings → Paste key there), then press "Save key" here.'))), 'info');
	},

	handleSaveKey: function(input, status, ev) {
		var self = this;
		var value = input.value.trim();

		if (!HEX64.test(value)) {
			ui.addNotification(null, E('p', text(_('A key is 64 hexadecimal characters (0-9, a-f).'))), 'danger');
			return Promise.resolve();
		}

		return callKeySet(value).then(function(reply) {
			if (reply && reply.error) {
				ui.addNotification(null, E('p', text(_('The key was not saved: %s').format(reply.error))), 'danger');
				return;
			}

			input.value = '';
			input.type = 'password';
			dom.content(status, text(self.keyText({ set: true, fingerprint: reply.fingerprint })));
			ui.addNotification(null, E('p', text(_('Key saved; owsync reloads with it. Fingerprint: %s').format(reply.fingerprint))), 'info');
		}).catch(function(err) {
			ui.addNotification(null, E('p', text(_('The key was not saved: %s').format(err.message))), 'danger');
		});
	},

	renderKey: function(info) {
		var ro = !this.writable();
		var status = E('p', { 'id': 'owsync-key-status' }, text(this.keyText(info)));
		var input = E('input', {
			'type': 'password',
			'id': 'owsync-key-input',
			'class': 'cbi-input-text',
			'autocomplete': 'off',
			'spellcheck': 'false',
			'style': 'width:40em;font-family:monospace',
			'placeholder': _('64 hexadecimal characters'),
			'disabled': ro ? '' : null
		});

		return E('div', { 'class': 'cbi-section', 'id': 'owsync-key' }, [
			E('h3', {}, _('Pre-shared key')),
			E('div', { 'class': 'cbi-section-descr' },
				_('All routers of the group share one 256-bit key. It is kept in /etc/owsync/key, readable by root only, and is never shown here; compare the fingerprints instead.')),
			status,
			E('div', { 'class': 'cbi-value' }, [
				E('label', { 'class': 'cbi-value-title', 'for': 'owsync-key-input' }, _('Paste key')),
				E('div', { 'class': 'cbi-value-field' }, [
					input, ' ',
					E('button', {
						'class': 'btn cbi-button',
						'id': 'owsync-key-generate',
						'disabled': ro ? '' : null,
						'click': ui.createHandlerFn(this, 'handleGenerate', input)
					}, _('Generate')), ' ',
					E('button', {
						'class': 'btn cbi-button cbi-button-save',
						'id': 'owsync-key-save',
						'disabled': ro ? '' : null,
						'click': ui.createHandlerFn(this, 'handleSaveKey', input, status)
					}, _('Save key'))
				])
			])
		]);
	},

	/* The section name of a ready choice is taken: that example is in UCI already. */
	exampleAdded: function(ex) {
		return uci.get('owsync', ex.name) != null;
	},

	/* As LuCI's own "Add" of a named section: into UCI's staged changes, then the form redrawn. */
	handleExample: function(ex, ev) {
		var self = this;
		var button = ev && ev.currentTarget;

		if (this.exampleAdded(ex) || (button && button.disabled))
			return Promise.resolve();
		if (button) {
			button.disabled = true;
			button.classList.add('spinning');
		}

		this.map.data.add('owsync', 'group', ex.name);
		GROUP_OPTIONS.forEach(function(name) {
			var v = ex[name];

			if (Array.isArray(v) ? v.length : (v != null && v !== ''))
				self.map.data.set('owsync', ex.name, name, v);
		});

		return this.map.save(null, true).then(function() {
			ui.addNotification(null, E('p', text(
				_('Group %s added. Save & Apply starts it on this router; add it on the other routers too.').format(ex.name))), 'info');
		}).finally(function() {
			if (button)
				button.classList.remove('spinning');
			self.updateExamples();
		});
	},

	updateExamples: function() {
		var self = this;

		(this.exampleButtons || []).forEach(function(b) {
			var added = self.exampleAdded(b.example);

			b.button.disabled = added || !self.writable();
			dom.content(b.button, added ? _('Added') : _('Add'));
		});
	},

	renderExamples: function() {
		var self = this;
		var ro = !this.writable();

		this.exampleButtons = [];

		var rows = examples.list().map(function(ex) {
			/* not ui.createHandlerFn: that enables the button again, and an added example's stays disabled */
			var button = E('button', {
				'class': 'btn cbi-button cbi-button-add owsync-example-add',
				'click': L.bind(self.handleExample, self, ex)
			}, _('Add'));
			var what = [ ex.dir, (ex.include || []).join(', ') ];
			var actions = (ex.reload || []).map(function(n) { return _('reload %s').format(n); })
				.concat((ex.restart || []).map(function(n) { return _('restart %s').format(n); }));

			self.exampleButtons.push({ example: ex, button: button });

			return E('tr', { 'class': 'tr owsync-example', 'data-example': ex.name }, [
				E('td', { 'class': 'td owsync-example-name', 'data-title': _('Group') }, E('strong', {}, text(ex.name))),
				E('td', { 'class': 'td owsync-example-why', 'data-title': _('Why') }, text(ex.why)),
				E('td', { 'class': 'td owsync-example-files', 'data-title': _('Files') }, E('code', {}, text(what.join(': ')))),
				E('td', { 'class': 'td owsync-example-actions', 'data-title': _('Actions') }, text(actions.join(', ') || '-')),
				E('td', { 'class': 'td cbi-section-actions' }, button)
			]);
		});

		this.updateExamples();

		return E('div', { 'class': 'cbi-section', 'id': 'owsync-examples' }, [
			E('h3', {}, _('Ready choices')),
			E('div', { 'class': 'cbi-section-descr' },
				_('What the routers of an HA pair usually share besides /etc/config. Add one, then Save & Apply; do the same on the other routers.')),
			ro ? E('p', {}, E('em', {}, _('Read only: you may not change the settings.'))) : '',
			E('table', { 'class': 'table', 'id': 'owsync-examples-table' }, [
				E('tr', { 'class': 'tr table-titles' }, [
					E('th', { 'class': 'th' }, _('Group')), E('th', { 'class': 'th' }, _('Why')),
					E('th', { 'class': 'th' }, _('Files')), E('th', { 'class': 'th' }, _('Actions')),
					E('th', { 'class': 'th cbi-section-actions' }, '')
				])
			].concat(rows))
		]);
	},

	/* The sync groups besides main: a `config group 'NAME'` section each. */
	renderGroups: function(m) {
		var s, o;

		s = m.section(form.GridSection, 'group', _('Sync groups'),
			_('Each group syncs one more directory with the same peers and key: its files, chosen by patterns, and the services to reload or restart when they arrive. A group whose directory is missing waits until it appears. The group name is its UCI section name (letters, digits, _).'));
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		s.addbtntitle = _('Add group');
		/* LuCI's Add takes any UCI name: not one that names a section already (main's is "main") */
		s.handleAdd = function(ev, name) {
			if (uci.get('owsync', name) != null) {
				ui.addNotification(null, E('p', text(_('There is a section called %s already: choose another name.').format(name))), 'danger');
				return Promise.resolve();
			}

			return form.GridSection.prototype.handleAdd.apply(this, arguments);
		};

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;
		o.editable = true;

		o = s.option(form.Value, 'dir', _('Directory'),
			_('An absolute path, not a symbolic link. Two groups may share a directory when their patterns match different files.'));
		o.datatype = 'directory';
		o.rmempty = false;
		o.placeholder = '/etc/dropbear';
		o.validate = function(section_id, value) {
			return (value == null || value == '' || value.charAt(0) == '/') ? true : _('Expecting an absolute path');
		};

		o = s.option(form.DynamicList, 'include', _('Include'),
			_('Glob patterns of the files to sync, relative to the directory; with no pattern nothing is synced.'));
		o.placeholder = '*';

		o = s.option(form.DynamicList, 'exclude', _('Exclude'), _('Files that stay different on each router; excludes win.'));
		o.modalonly = true;

		[ [ 'reload', _('Reload'), _('Init scripts to reload once after files of the group arrive (/etc/init.d/NAME reload).') ],
		  [ 'restart', _('Restart'), _('Init scripts to restart once after files of the group arrive (/etc/init.d/NAME restart).') ] ].forEach(function(spec) {
			o = s.option(form.DynamicList, spec[0], spec[1], spec[2]);
			o.placeholder = 'dropbear';
			o.validate = function(section_id, value) {
				return (value == null || value == '' || (SERVICE.test(value) && value.indexOf('..') < 0))
					? true : _('Expecting the name of an init script');
			};
		});

		return s;
	},

	render: function(data) {
		var m, s, o;

		m = new form.Map('owsync', _('owsync'),
			_('Keeps /etc/config identical on the routers of a VRRP group. Set the same key and name the other routers as peers on each of them.'));

		/* left null, LuCI's Map asks rpcd whether this session may write UCI owsync */
		if (!this.writable())
			m.readonly = true;

		s = m.section(form.NamedSection, 'main', 'owsync', _('Settings'));
		s.addremove = false;
		s.tab('general', _('General'));
		s.tab('filters', _('What is synced'));
		s.tab('advanced', _('Advanced'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;

		o = s.taboption('general', form.DynamicList, 'peer', _('Peers'),
			_('The other routers: an address, host:port or [IPv6]:port; append ",source address" to connect from a given local address.'));
		o.placeholder = '192.168.1.2';
		o.validate = function(section_id, value) {
			if (value == null || value == '')
				return true;

			return /^[^\s,]+(,[^\s,]+)?$/.test(value) ? true : _('Expecting an address, optionally followed by ",source address"');
		};

		o = s.taboption('general', form.Flag, 'plain_mode', _('Plain mode'),
			'<strong class="owsync-plain-warning">%h</strong>'.format(
				_('Warning: sends the configuration, passwords included, unencrypted. Only inside a VPN (WireGuard, IPsec).')));
		o.rmempty = true;

		o = s.taboption('filters', form.DynamicList, 'include', _('Include'),
			_('Glob patterns of the files to sync, relative to the synced directory; "*" is everything. With no pattern nothing is synced.'));
		o.placeholder = '*';

		o = s.taboption('filters', form.DynamicList, 'exclude', _('Exclude'),
			_('Files that must stay different on each router; excludes win over includes. Shipped: network and system (this router\'s interfaces, addresses and hostname), owsync (each router names the others), keepalived (VRRP priorities differ by design), wireless (radios depend on the hardware), fstab (this router\'s storage), dropbear (its SSH access).'));

		o = s.taboption('filters', form.Flag, 'reload_services', _('Reload services'),
			_('Reload the services whose configuration arrived (dnsmasq when dhcp arrives), as reload_config does. On by default when the synced directory is /etc/config.'));
		o.default = '1';
		o.rmempty = true;

		o = s.taboption('advanced', form.Value, 'port', _('Port'), _('TCP port to listen on and to reach the peers.'));
		o.datatype = 'and(uinteger,range(1,65535))';
		o.placeholder = '4321';

		o = s.taboption('advanced', form.Value, 'host', _('Bind address'),
			_('"::" listens on IPv4 and IPv6, "0.0.0.0" on IPv4 only.'));
		o.datatype = 'host';
		o.placeholder = '::';

		o = s.taboption('advanced', form.Value, 'poll_interval', _('Poll interval'),
			_('Seconds between full syncs with every peer, a safety net behind the immediate pushes.'));
		o.datatype = 'and(uinteger,range(1,2147483647))';
		o.placeholder = '60';

		o = s.taboption('advanced', form.ListValue, 'min_protocol', _('Minimum protocol'),
			_('Protocol 2 binds each session to fresh keys, so a recorded session cannot be replayed; owsync 1.2.0 speaks protocol 1 only. Require 2 once no router runs 1.2.0.'));
		o.value('1', _('1: also sync with owsync 1.2.0'));
		o.value('2', _('2: refuse owsync 1.2.0'));
		o.default = '1';

		o = s.taboption('advanced', form.ListValue, 'log_level', _('Log level'));
		o.value('0', _('Errors'));
		o.value('1', _('Warnings'));
		o.value('2', _('Information'));
		o.value('3', _('Debug'));
		o.default = '2';

		this.renderGroups(m);
		this.map = m;

		return m.render().then(L.bind(function(mapNode) {
			return E([ mapNode, this.renderExamples(), this.renderKey(data[1]) ]);
		}, this));
	}
});
