// Sync groups in owsync/format.js under Node.js: the Status page's group rows,
// history sentences of a group, and how History names a group's version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadClass } from './load.mjs';

const fmt = loadClass(fileURLToPath(new URL(
	'../../luci/luci-app-owsync/htdocs/luci-static/resources/owsync/format.js', import.meta.url)));
const NOW = 1795641400;

// the shape of status["groups"] in notes/groups-design.md
const group = (over) => ({ name: 'dropbear', dir: '/etc/dropbear', enabled: true, state: 'syncing',
	files: 2, tombstones: 1, last_change: NOW - 180, reload: [], restart: ['dropbear'],
	peers: { '192.168.1.3': 'v1', '192.168.1.2': 'synced' }, ...over });

test('a group row: state, counts, last change, actions, each peer', () => {
	const r = fmt.groupRow(group(), NOW);
	assert.equal(r.name, 'dropbear');
	assert.equal(r.dir, '/etc/dropbear');
	assert.equal(r.stateLabel, 'Syncing');
	assert.equal(r.stateClass, 'success');
	assert.equal(r.reason, '');
	assert.equal(r.files, '2 files, 1 tombstones');
	assert.equal(r.lastChange, '3 min ago');
	assert.match(r.lastChangeTitle, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
	assert.equal(r.actions, 'restart dropbear');
	// sorted by address, each with its words, its label class and why
	assert.deepEqual(r.peers.map((p) => [p.address, p.state, p.label, p.labelClass]), [
		['192.168.1.2', 'synced', 'synced', 'success'],
		['192.168.1.3', 'v1', 'v1', 'warning']]);
	assert.match(r.peers[1].title, /owsync 1\.2\.0.*main group only/);
});

test('a waiting group says why; a disabled one and unknown words pass through', () => {
	const w = fmt.groupRow(group({ state: 'waiting', reason: '/etc/acme does not exist',
		last_change: null, reload: ['uhttpd'], restart: [], peers: { '10.0.0.2': 'pending' } }), NOW);
	assert.equal(w.stateLabel, 'Waiting');
	assert.equal(w.stateClass, 'warning');
	assert.equal(w.reason, '/etc/acme does not exist');
	assert.equal(w.lastChange, 'never');
	assert.equal(w.actions, 'reload uhttpd');
	assert.deepEqual(w.peers.map((p) => [p.label, p.labelClass]), [['pending', 'notice']]);
	const d = fmt.groupRow(group({ state: 'disabled', restart: [], peers: { a: 'absent', b: 'later' } }), NOW);
	assert.equal(d.stateLabel, 'Disabled');
	assert.equal(d.stateClass, '');
	assert.equal(d.actions, '-');
	assert.deepEqual(d.peers.map((p) => [p.label, p.labelClass]), [['absent', ''], ['later', '']]);
	assert.equal(fmt.groupRow(group({ state: 'new' }), NOW).stateLabel, 'new');
});

test('the Groups table is shown once a group besides main exists', () => {
	assert.equal(fmt.hasGroups(undefined), false);
	assert.equal(fmt.hasGroups([group({ name: 'main' })]), false);
	assert.equal(fmt.hasGroups([group({ name: 'main' }), group()]), true);
});

test('an activity of a group other than main names it', () => {
	const e = { time: NOW - 30, ok: true, peer: '192.168.1.2', arrived: ['dropbear_rsa_host_key'],
		received: 1, removed: [], sent: 0 };
	assert.equal(fmt.historySentence({ ...e, group: 'dropbear' }, NOW),
		'dropbear: dropbear_rsa_host_key from 192.168.1.2, 30 s ago');
	assert.equal(fmt.historySentence({ ...e, group: 'main' }, NOW), 'dropbear_rsa_host_key from 192.168.1.2, 30 s ago');
	assert.equal(fmt.historySentence(e, NOW), 'dropbear_rsa_host_key from 192.168.1.2, 30 s ago');
});

test('a version of a group is named GROUP:ID, one of main by its id', () => {
	assert.equal(fmt.versionRef({ id: 4, group: 'dropbear' }), 'dropbear:4');
	assert.equal(fmt.versionRef({ id: 4, group: 'main' }), 4);
	assert.equal(fmt.versionRef({ id: 4 }), 4);  // a daemon without groups
	const row = fmt.versionRow({ id: 4, group: 'dropbear', path: 'k', kept: NOW * 1000, mtime: NOW * 1000,
		reason: 'replaced', peer: '', size: 3, text: false }, NOW);
	assert.equal(row.ref, 'dropbear:4');
	assert.equal(row.group, 'dropbear');
	assert.equal(fmt.versionRow({ id: 4, path: 'k', reason: 'replaced' }, NOW).group, 'main');
	assert.deepEqual(fmt.versionGroups([{ group: 'zeta' }, {}, { group: 'acme' }], { passwd: {} }),
		['main', 'acme', 'passwd', 'zeta']);
	assert.deepEqual(fmt.versionGroups([], null), []);
});
