/*
 * A small stand-in for LuCI's client runtime, for CI only (LuCI itself is not
 * part of this repository; tests/test_luci_real.py runs the real one).  It
 * supplies what the owsync views use, and nothing else:
 *
 *   L.require with 'require x' / 'require x.y as z' directives, L.bind,
 *   L.resolveDefault, L.hasViewPermission (from ?ro=1), E, _ and
 *   String.prototype.format (%s, %d), baseclass.extend, view.extend (load,
 *   then render into #view), rpc.declare (JSON-RPC "call" on /ubus with a
 *   fixed session, as uhttpd takes it), poll.add (setInterval), dom.content,
 *   ui.addNotification / ui.createHandlerFn, uci.load / uci.get (through
 *   /ubus "uci get"), and a form.Map that renders its options as plain
 *   inputs filled from UCI (no saving: LuCI's own form does that).
 */
'use strict';

(function () {
	var SESSION = '00000000000000000000000000000000';
	var params = new URLSearchParams(location.search);

	String.prototype.format = function () {
		var args = arguments, i = 0;
		return this.replace(/%([sd%])/g, function (m, t) {
			if (t == '%') return '%';
			var v = args[i++];
			return t == 'd' ? String(Math.trunc(Number(v))) : String(v);
		});
	};

	function _(s) { return s; }

	function append(node, children) {
		if (children == null) return;
		if (Array.isArray(children)) { children.forEach(function (c) { append(node, c); }); return; }
		node.appendChild(children instanceof Node ? children : document.createTextNode(String(children)));
	}

	function E(tag, attrs, children) {
		if (Array.isArray(tag)) {
			var frag = document.createDocumentFragment();
			append(frag, tag);
			return frag;
		}
		var node = document.createElement(tag);
		if (attrs != null && (typeof attrs != 'object' || Array.isArray(attrs) || attrs instanceof Node)) {
			children = attrs;
			attrs = null;
		}
		Object.keys(attrs || {}).forEach(function (k) {
			var v = attrs[k];
			if (v == null) return;
			if (typeof v == 'function') node.addEventListener(k, v);
			else node.setAttribute(k, v);
		});
		append(node, children);
		return node;
	}

	var baseclass = {
		extend: function (proto) {
			var parent = this;
			var klass = Object.create(parent);
			Object.assign(klass, proto);
			klass.instantiate = function () { return Object.create(klass); };
			return klass;
		}
	};

	var rpcId = 0;
	var rpc = baseclass.extend({
		declare: function (d) {
			return function () {
				var args = {};
				var given = arguments;
				(d.params || []).forEach(function (p, i) { if (given[i] !== undefined) args[p] = given[i]; });
				return fetch('/ubus', {
					method: 'POST',
					headers: { 'Content-Type': 'application/json' },
					body: JSON.stringify({ jsonrpc: '2.0', id: ++rpcId, method: 'call',
						params: [ SESSION, d.object, d.method, args ] })
				}).then(function (r) { return r.json(); }).then(function (reply) {
					if (reply.error)
						throw new Error('RPCError: ' + reply.error.message);
					var code = reply.result[0], data = reply.result[1];
					if (code != 0)
						throw new Error(code == 4 ? 'Object not found' : code == 6 ? 'Permission denied' : 'RPC error ' + code);
					if (d.expect) {
						var key = Object.keys(d.expect)[0];
						return key === '' ? data : (data && key in data ? data[key] : d.expect[key]);
					}
					return data;
				});
			};
		}
	});

	var poll = baseclass.extend({
		add: function (fn, seconds) { setInterval(fn, (seconds || 5) * 1000); }
	});

	var dom = baseclass.extend({
		content: function (node, children) {
			while (node.firstChild) node.removeChild(node.firstChild);
			append(node, children);
			return node;
		}
	});

	var ui = baseclass.extend({
		addNotification: function (title, children, cls) {
			var box = E('div', { 'class': 'alert-message ' + (cls || '') }, children);
			document.getElementById('notifications').appendChild(box);
			return box;
		},
		createHandlerFn: function (ctx, fn) {
			var extra = Array.prototype.slice.call(arguments, 2);
			return function (ev) {
				var method = typeof fn == 'function' ? fn : ctx[fn];
				return method.apply(ctx, extra.concat([ ev ]));
			};
		}
	});

	var uciData = {};
	var callUciGet = rpc.declare({ object: 'uci', method: 'get', params: [ 'config' ] });
	var uci = baseclass.extend({
		load: function (pkg) {
			return callUciGet(pkg).then(function (reply) { uciData[pkg] = reply.values || {}; return pkg; });
		},
		get: function (pkg, section, option) {
			var s = (uciData[pkg] || {})[section];
			return s == null ? null : (option == null ? s : s[option]);
		}
	});

	function Option(kind, name, title, descr) {
		this.kind = kind; this.name = name; this.title = title; this.descr = descr;
		this.values = [];
	}
	Option.prototype.value = function (v, label) { this.values.push([ v, label ]); };

	function Section(map, name, type, title) {
		this.map = map; this.name = name; this.type = type; this.title = title;
		this.options = [];
	}
	Section.prototype.tab = function () {};
	Section.prototype.option = function (kind, name, title, descr) {
		var o = new Option(kind, name, title, descr);
		this.options.push(o);
		return o;
	};
	Section.prototype.taboption = function (tab, kind, name, title, descr) {
		return this.option(kind, name, title, descr);
	};

	function FormMap(config, title, descr) {
		this.config = config; this.title = title; this.descr = descr; this.sections = [];
	}
	FormMap.prototype.section = function (kind, name, type, title) {
		var s = new Section(this, name, type, title);
		this.sections.push(s);
		return s;
	};
	FormMap.prototype.render = function () {
		var map = this;
		return Promise.resolve(E('div', { 'class': 'cbi-map', 'id': 'cbi-' + map.config }, [
			E('h2', {}, map.title), E('div', { 'class': 'cbi-map-descr' }, map.descr),
			map.sections.map(function (s) {
				return E('div', { 'class': 'cbi-section', 'id': 'cbi-' + map.config + '-' + s.name }, [
					E('h3', {}, s.title),
					s.options.map(function (o) {
						var v = uci.get(map.config, s.name, o.name);
						return E('div', { 'class': 'cbi-value', 'data-name': o.name }, [
							E('label', { 'class': 'cbi-value-title' }, o.title),
							E('input', { 'name': 'cbid.' + map.config + '.' + s.name + '.' + o.name,
								'value': Array.isArray(v) ? v.join(' ') : (v == null ? '' : v),
								'placeholder': o.placeholder || '',
								'disabled': map.readonly ? '' : null }),
							o.descr ? E('div', { 'class': 'cbi-value-description' }, o.descr) : null
						]);
					})
				]);
			})
		]));
	};
	var form = baseclass.extend({
		Map: FormMap, NamedSection: 'NamedSection', Flag: 'Flag', Value: 'Value',
		DynamicList: 'DynamicList', ListValue: 'ListValue'
	});

	var view = baseclass.extend({
		load: function () { return Promise.resolve(); },
		render: function () { return E('div'); }
	});

	var modules = { baseclass: baseclass, rpc: rpc, poll: poll, dom: dom, ui: ui, uci: uci,
		form: form, view: view };

	function load(name) {
		if (modules[name]) return Promise.resolve(modules[name]);
		var url = '/luci-static/resources/' + name.replace(/\./g, '/') + '.js';
		return fetch(url).then(function (r) {
			if (!r.ok) throw new Error('cannot load ' + url + ': ' + r.status);
			return r.text();
		}).then(function (body) {
			var deps = [], names = [], m;
			var re = /^\s*'require\s+([\w.]+)(?:\s+as\s+(\w+))?';/gm;
			while ((m = re.exec(body)) != null) {
				deps.push(m[1]);
				names.push(m[2] || m[1].split('.').pop());
			}
			return Promise.all(deps.map(load)).then(function (resolved) {
				var fn = new Function(names.concat([ 'L', 'E', '_' ]).join(','), body);
				modules[name] = fn.apply(null, resolved.concat([ window.L, E, _ ]));
				return modules[name];
			});
		});
	}

	window.E = E;
	window._ = _;
	window.L = {
		env: {},
		require: load,
		bind: function (fn, self) {
			var extra = Array.prototype.slice.call(arguments, 2);
			return function () { return fn.apply(self, extra.concat(Array.prototype.slice.call(arguments))); };
		},
		resolveDefault: function (p, def) { return Promise.resolve(p).catch(function () { return def; }); },
		hasViewPermission: function () { return params.get('ro') != '1'; },
		isObject: function (v) { return v != null && typeof v == 'object'; }
	};

	/* like LuCI's dispatcher: instantiate the view, load, render into #view */
	window.showView = function (name) {
		return load(name).then(function (klass) {
			var v = window.currentView = klass.instantiate();
			return Promise.resolve(v.load()).then(function (data) {
				return v.render(data);
			}).then(function (node) {
				dom.content(document.getElementById('view'), node);
				document.body.setAttribute('data-rendered', name);
			});
		}).catch(function (err) {
			console.error('view failed: ' + (err && err.stack || err));
		});
	};
})();
