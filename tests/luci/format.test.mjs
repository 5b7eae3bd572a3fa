import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadClass } from './load.mjs';

const fmt = loadClass(fileURLToPath(new URL(
	'../../luci/luci-app-owsync/htdocs/luci-static/resources/owsync/format.js', import.meta.url)));
const NOW = 1795641400;

test('relative times', () => {
	assert.equal(fmt.relativeTime(null, NOW), 'never');
	assert.equal(fmt.relativeTime(NOW - 2, NOW), 'just now');
	assert.equal(fmt.relativeTime(NOW - 42, NOW), '42 s ago');
	assert.equal(fmt.relativeTime(NOW - 180, NOW), '3 min ago');
	assert.equal(fmt.relativeTime(NOW - 7300, NOW), '2 h ago');
	assert.equal(fmt.relativeTime(NOW - 5 * 86400, NOW), '5 days ago');
	assert.equal(fmt.untilTime(NOW + 12.4, NOW), 'in 12 s');
	assert.equal(fmt.untilTime(NOW + 125, NOW), 'in 3 min');
	assert.equal(fmt.duration(754), '0h 12m');
	assert.equal(fmt.duration(90061), '1d 1h 1m');
});

test('absolute time is the local date and time', () => {
	const d = new Date(NOW * 1000);
	const text = fmt.absoluteTime(NOW);
	assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
	assert.ok(text.startsWith(String(d.getFullYear())));
	assert.ok(text.endsWith(':' + String(d.getSeconds()).padStart(2, '0')));
	assert.equal(fmt.absoluteTime(null), '');
});

test('health of a peer', () => {
	assert.equal(fmt.health({ state: 'idle', last_result: null }), 'pending');
	assert.equal(fmt.health({ state: 'idle', last_result: 'ok', consecutive_failures: 0 }), 'in-sync');
	assert.equal(fmt.health({ state: 'syncing', last_result: 'ok' }), 'syncing');
	const failed = { state: 'backing off', last_result: 'cannot connect: Connection refused' };
	assert.equal(fmt.health({ ...failed, consecutive_failures: 1 }), 'retrying');
	assert.equal(fmt.health({ ...failed, consecutive_failures: fmt.FAILING_AFTER }), 'failing');
	assert.equal(fmt.healthLabel('failing'), 'Failing');
});

test('a peer on a live link', () => {
	const row = fmt.peerRow({
		address: '192.168.1.3', state: 'connected', last_result: 'ok', last_success: NOW,
		received: 4, sent: 2, deleted: 1, protocol: 2,
		live: { connected_since: NOW - 120, updates_sent: 7, updates_received: 3,
			last_update_received: NOW - 5, last_update_sent: NOW - 60 },
	}, NOW);
	assert.equal(row.state, 'connected 2 min ago');
	assert.equal(row.protocol, 'v2 live');
	assert.match(row.protocolTitle, /7 updates sent, 3 received; last 5 s ago/);
	assert.equal(row.health, 'in-sync');
	assert.equal(row.counts, '4 / 2 / 1');
});

test('a peer row', () => {
	const row = fmt.peerRow({
		address: '192.168.1.2', source: '192.168.1.1', state: 'backing off',
		last_success: NOW - 180, last_result: 'peer closed the connection',
		received: 1, sent: 2, deleted: 3, consecutive_failures: 4, next_retry: NOW + 30,
		protocol: 1,
	}, NOW);
	assert.equal(row.address, '192.168.1.2');
	assert.equal(row.source, '192.168.1.1');
	assert.equal(row.health, 'failing');
	assert.equal(row.lastSuccess, '3 min ago');
	assert.equal(row.lastSuccessTitle, fmt.absoluteTime(NOW - 180));
	assert.equal(row.result, 'peer closed the connection');
	assert.equal(row.counts, '1 / 2 / 3');
	assert.equal(row.failures, '4');
	assert.equal(row.nextRetry, 'in 30 s');
	assert.equal(row.state, 'backing off');
	assert.equal(row.protocol, 'v1');
	assert.match(row.protocolTitle, /owsync 1\.2\.0/);
	assert.equal(fmt.peerRow({ address: 'b', state: 'idle', protocol: 2 }, NOW).protocol, 'v2');
	assert.equal(fmt.peerRow({ address: 'b', state: 'idle', protocol: 2 }, NOW).protocolTitle, '');
	assert.equal(fmt.directionLabel('incoming'), 'incoming');
	const fresh = fmt.peerRow({ address: 'b', state: 'idle' }, NOW);
	assert.deepEqual([fresh.lastSuccess, fresh.result, fresh.counts, fresh.nextRetry, fresh.source,
		fresh.protocol], ['never', '-', '0 / 0 / 0', '-', '', '-']);
	// a daemon older than the protocol field, or a peer that failed before its Hello
	assert.equal(fmt.peerRow({ address: 'b', state: 'idle', protocol: null }, NOW).protocol, '-');
});

test('history sentences', () => {
	const base = { time: NOW - 180, direction: 'incoming', peer: '192.168.1.2', ok: true,
		received: 1, sent: 0, deleted: 0, arrived: ['dhcp'], removed: [], reloaded: ['dhcp'] };
	assert.equal(fmt.historySentence(base, NOW), 'dhcp from 192.168.1.2, 3 min ago, dnsmasq reloaded');
	assert.equal(fmt.historySentence({ ...base, arrived: [], received: 0, deleted: 1,
		removed: ['old'], reloaded: [] }, NOW), 'old deleted by 192.168.1.2, 3 min ago');
	assert.equal(fmt.historySentence({ ...base, arrived: [], received: 0, sent: 2, reloaded: [] }, NOW),
		'2 file(s) sent to 192.168.1.2, 3 min ago');
	assert.equal(fmt.historySentence({ ...base, received: 25, arrived: ['a', 'b'], reloaded: ['custom'] }, NOW),
		'a, b and 23 more from 192.168.1.2, 3 min ago, custom reloaded');
	assert.equal(fmt.historySentence({ ...base, ok: false, error: 'cannot connect: refused',
		repeats: 4 }, NOW), 'Sync with 192.168.1.2 failed, 3 min ago: cannot connect: refused (4 times)');
});

test('daemon rows warn in plain mode and when not listening', () => {
	const st = { pid: 42, version: '2.0.0', uptime: 60, sync_dir: '/etc/config', encryption: true,
		key: { set: true, fingerprint: 'ab12:cd34:ef56:7890' }, listen: ':: port 4321',
		change_detection: 'inotify', files: 3, tombstones: 1 };
	const rows = fmt.daemonRows(st, NOW);
	assert.deepEqual(rows.filter((r) => r[2]), []);
	assert.ok(rows.some((r) => r[1] === 'AES-256-GCM, key ab12:cd34:ef56:7890'));
	assert.ok(rows.some((r) => r[1] === '3 files, 1 tombstones'));
	const plain = fmt.daemonRows({ ...st, encryption: false, listen_error: 'Address in use' }, NOW);
	const warned = plain.filter((r) => r[2]).map((r) => r[1]);
	assert.equal(warned.length, 2);
	assert.match(warned[0], /PLAIN/);
	assert.match(warned[1], /Address in use/);
});

test('the minimum protocol is a daemon row only when it refuses owsync 1.2.0 peers', () => {
	const st = { pid: 42, version: '2.0.0', uptime: 60, sync_dir: '/etc/config', encryption: true,
		listen: ':: port 4321', change_detection: 'inotify', files: 3, tombstones: 1 };
	const labels = (rows) => rows.map((r) => r[0]);
	assert.ok(!labels(fmt.daemonRows(st, NOW)).includes('Minimum protocol'));
	assert.ok(!labels(fmt.daemonRows({ ...st, min_protocol: 1 }, NOW)).includes('Minimum protocol'));
	const rows = fmt.daemonRows({ ...st, min_protocol: 2 }, NOW);
	const i = labels(rows).indexOf('Minimum protocol');
	assert.equal(rows[i][1], '2 (refuses owsync 1.2.0 peers)');
	assert.ok(!rows[i][2]);  // a policy, not a warning
	assert.deepEqual(labels(rows).slice(i - 1, i + 2), ['Listening', 'Minimum protocol', 'Change detection']);
});

test('advice when the daemon is not running', () => {
	assert.match(fmt.notRunningAdvice(false, false), /\/etc\/init.d\/owsync enable/);
	assert.match(fmt.notRunningAdvice(false, true), /disabled.*Settings/);
	assert.match(fmt.notRunningAdvice(true, true), /enabled but not running.*logread/);
});

test('advice when the daemon runs but will not stay running', () => {
	assert.equal(fmt.notEnabledAdvice(true, true), null);
	assert.equal(fmt.notEnabledAdvice(true, null), null);  // rc list unknown: say nothing
	assert.match(fmt.notEnabledAdvice(false, true), /disabled in Settings.*stops/);
	assert.match(fmt.notEnabledAdvice(true, false), /not start at boot.*\/etc\/init.d\/owsync enable/);
});

test('text from the daemon is kept as it is (the views insert it as text nodes)', () => {
	const name = '<img src=x onerror=alert(1)>';
	const e = { time: NOW - 60, direction: 'incoming', peer: '192.168.1.2', ok: true,
		received: 1, sent: 0, deleted: 0, arrived: [name], removed: [], reloaded: [] };
	assert.equal(fmt.historySentence(e, NOW), name + ' from 192.168.1.2, 1 min ago');
	assert.equal(fmt.peerRow({ address: 'b', state: 'idle', last_result: name }, NOW).result, name);
});

test('VRRP roles: this router\'s per instance, and a peer\'s in a cell', () => {
	const rows = fmt.vrrpRows({
		VI_2: { role: 'BACKUP', since: NOW - 180 },
		VI_1: { role: 'MASTER', since: NOW - 42, reconciling: false },
		VI_3: { role: 'FAULT', since: null },
	}, NOW);
	assert.deepEqual(rows.map((r) => [r.instance, r.role, r.roleClass, r.since]), [
		['VI_1', 'MASTER', 'success', 'since 42 s ago'],
		['VI_2', 'BACKUP', 'notice', 'since 3 min ago'],
		['VI_3', 'FAULT', 'important', '-'],
	]);
	assert.match(rows[0].sinceTitle, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
	assert.deepEqual(fmt.vrrpRows(undefined, NOW), []);  // a daemon without roles, or older
	assert.equal(fmt.peerVrrp({ VI_2: { role: 'BACKUP' }, VI_1: { role: 'MASTER' } }),
		'VI_1: MASTER, VI_2: BACKUP');
	assert.equal(fmt.peerVrrp(undefined), '-');
	assert.equal(fmt.peerRow({ address: 'a', state: 'idle' }, NOW).vrrp, '-');
});
