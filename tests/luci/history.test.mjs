// The History view's formatting (owsync/format.js: kept versions, the store, diffs) under Node.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadClass } from './load.mjs';

const fmt = loadClass(fileURLToPath(new URL(
	'../../luci/luci-app-owsync/htdocs/luci-static/resources/owsync/format.js', import.meta.url)));
const NOW = 1795641400;  // seconds, as the views keep time
const MS = NOW * 1000;   // the daemon's versions are in milliseconds

const version = (over) => ({ id: 7, path: 'dhcp', hash: 'ab'.repeat(32), size: 1536,
	mtime: MS - 3600e3, mode: 0o600, reason: 'replaced', peer: '192.168.1.2', kept: MS - 180e3,
	text: true, ...over });

test('sizes', () => {
	assert.equal(fmt.size(0), '0 B');
	assert.equal(fmt.size(null), '0 B');
	assert.equal(fmt.size(512), '512 B');
	assert.equal(fmt.size(1023), '1023 B');
	assert.equal(fmt.size(1024), '1.0 KiB');
	assert.equal(fmt.size(1536), '1.5 KiB');
	assert.equal(fmt.size(1024 * 1024), '1.0 MiB');
	assert.equal(fmt.size(12.5 * 1024 * 1024), '12.5 MiB');
	assert.equal(fmt.size(3 * 1024 ** 3), '3.0 GiB');
	assert.equal(fmt.size(2 * 1024 ** 5), '2048.0 TiB');
});

test('what happened to a version, and by whom', () => {
	assert.equal(fmt.reasonText(version()), 'overwritten by a newer write from a peer');
	assert.equal(fmt.reasonText(version({ reason: 'deleted' })), 'deleted by a peer');
	assert.equal(fmt.reasonText(version({ reason: 'deleted', peer: '' })), 'deleted on this router');
	assert.match(fmt.reasonText(version({ reason: 'conflict' })), /^written here, lost to a newer write/);
	assert.equal(fmt.reasonText(version({ reason: 'edited', peer: '' })), 'replaced by an edit on this router');
	assert.equal(fmt.reasonText(version({ reason: 'restored', peer: '' })), 'replaced by a restore');
	assert.equal(fmt.reasonLabel('conflict'), 'Conflict');
	// a reason this app does not know yet is shown as the daemon says it
	assert.equal(fmt.reasonText(version({ reason: 'merged' })), 'merged');
	assert.equal(fmt.versionBy(version()), '192.168.1.2');
	assert.equal(fmt.versionBy(version({ peer: '' })), 'this router');
	assert.equal(fmt.versionBy(version({ peer: undefined })), 'this router');
});

test('a version row: times from milliseconds, reason, size', () => {
	const r = fmt.versionRow(version(), NOW);
	assert.equal(r.id, 7);
	assert.equal(r.path, 'dhcp');
	assert.equal(r.kept, '3 min ago');
	assert.equal(r.keptTitle, fmt.absoluteTime(NOW - 180));
	assert.equal(r.written, fmt.absoluteTime(NOW - 3600));
	assert.equal(r.reason, 'replaced');
	assert.equal(r.conflict, false);
	assert.equal(r.by, '192.168.1.2');
	assert.equal(r.size, '1.5 KiB');
	assert.equal(r.text, true);
	const c = fmt.versionRow(version({ reason: 'conflict', peer: '10.0.0.2', text: false }), NOW);
	assert.deepEqual([c.reason, c.conflict, c.reasonLabel, c.text], ['conflict', true, 'Conflict', false]);
	// an unknown reason never becomes a CSS class of the daemon's choosing
	assert.equal(fmt.versionRow(version({ reason: 'x y"<' }), NOW).reason, 'other');
});

test('the store line', () => {
	const store = { dir: '/etc/owsync/owsync.versions', bytes: 35328, objects: 9, keep: 10,
		max_size: 1048576, max_age_days: 30 };
	assert.equal(fmt.storeSummary(store, 12),
		'12 version(s) kept; the store holds 34.5 KiB in 9 content(s), in /etc/owsync/owsync.versions. ' +
		'Limits: 10 versions per file, 1.0 MiB in all, 30 days.');
	assert.match(fmt.storeSummary({ ...store, keep: 0 }, 0), /No versions are kept/);
	assert.equal(fmt.storeSummary(null, 0), '');
});

test('diff lines and their kinds', () => {
	const diff = [
		'--- dhcp (version 7)', '+++ dhcp (current)', '@@ -1,3 +1,3 @@', ' config dnsmasq',
		"-\toption domain 'lan'", "+\toption domain 'home'", '--- a line that starts with two dashes',
		'\\ No newline at end of file', '',
	].join('\n');
	assert.deepEqual(fmt.diffLines(diff).map((l) => l.kind),
		['head', 'head', 'hunk', 'ctx', 'del', 'add', 'del', 'note']);
	assert.equal(fmt.diffLines(diff)[4].text, "-\toption domain 'lan'");
	assert.deepEqual(fmt.diffLines(''), []);
	assert.deepEqual(fmt.diffLines(null), []);
	// a hostile line is kept as it is: the view inserts it as a text node
	const hostile = '+<img src=x onerror=alert(1)>';
	assert.deepEqual(fmt.diffLines('@@ -0,0 +1 @@\n' + hostile)[1], { kind: 'add', text: hostile });
});
