/*
 * A small stand-in for LuCI's client runtime, for CI only (LuCI itself is not
 * part of this repository; tests/test_luci_real.py runs the real one).  It
 * supplies what the owsync views use, and nothing else, with the semantics
 * of LuCI's own luci.js, rpc.js, ui.js and form.js (read from LuCI master of
 * 2024-09, written anew here), including the ones that bite:
 *
 *   - E(tag, attrs, children) / dom.create: an attrs argument that is not a
 *     plain object or is an array is taken as the children; a Node there is
 *     taken as attributes (so E('p', node) loses node, as in LuCI); a tag
 *     given as an array makes a fragment of create(item) for each item.
 *   - dom.append / dom.content: an array's items become nodes or text nodes,
 *     but a lone string child is set as innerHTML (so text from the daemon
 *     must be passed inside an array, or it is parsed as HTML).
 *   - rpc.declare: params by position, `expect` unwrapping as LuCI does it, a
 *     ubus status other than 0 resolves to that number unless `reject: true`,
 *     a JSON-RPC error (uhttpd's "Access denied") rejects with an RPCError.
 *   - ui.createHandlerFn: disables the clicked button and adds "spinning"
 *     until the handler's promise settles, then enables it again;
 *     ui.addNotification puts a div.alert-message (plus the given classes)
 *     first in #maincontent; ui.showModal(title, children, ...classes) fills
 *     #modal_overlay > .modal with an h4 of the title (a string title is
 *     innerHTML, as in LuCI) and the children, and shows it by the body's
 *     class modal-overlay-active; ui.hideModal removes that class and leaves
 *     the dialog's content in place, as LuCI does.
 *   - L.require with 'require x' / 'require x.y as z' (default name: x_y),
 *     the class instantiated once; baseclass.extend; view (load, then render
 *     into #view, as LuCI's dispatcher does); poll.add (sequential, seconds,
 *     once per function) and poll.remove;
 *     L.bind, L.resolveDefault, L.isObject; L.hasViewPermission() from
 *     L.env.nodespec (readonly when the page was opened with ?ro=1, as LuCI
 *     sets it for a user whose ACL grants the menu node read-only).
 *   - uci.load / uci.get / uci.sections (ubus uci get), and uci.add / uci.set
 *     in the page's copy only (LuCI stages them in rpcd; here nothing is
 *     sent); a form.Map that, like LuCI's, asks `session access uci <config>
 *     write` when its readonly is left null, and renders each option as one
 *     input named cbid.<config>.<section>.<option> filled from UCI, disabled
 *     when the map is readonly; a GridSection/TypedSection renders a row
 *     (tr.cbi-section-table-row, data-sid) per section of its type, with the
 *     same inputs.  map.data is uci; map.save(cb, silent) redraws the map from
 *     the page's copy (no parsing, no saving: LuCI's own form does those;
 *     tests/test_luci_real.py covers them).
 *   - String.prototype.format with %s, %d, %h (HTML-escaped), %%; _() is identity.
 *
 * The session id is that of a full admin, or with ?ro=1 that of a user with
 * the read grant alone; the server (tests/luci_standin.py) applies the app's
 * ACL file to it as rpcd would.
 */
'use strict';

(function () {
	var params = new URLSearchParams(location.search);
	var READONLY = params.get('ro') == '1';
	var SESSION = READONLY ? '11111111111111111111111111111111' : '00000000000000000000000000000000';

	function esc(s) {
		return String(s).replace(/&/g, '&#38;').replace(/"/g, '&#34;').replace(/'/g, '&#39;')
			.replace(/</g, '&#60;').replace(/>/g, '&#62;');
	}

	String.prototype.format = function () {
		var args = arguments, i = 0;
		return this.replace(/%([sdh%])/g, function (m, t) {
			if (t == '%') return '%';
			var v = args[i++];
			if (t == 'd') return Math.floor(+v || 0).toFixed(0);
			if (t == 'h') return v == null ? '' : esc(v);
			return v == null ? '' : String(v);
		});
	};

	function _(s) { return s; }

	function isElem(e) { return e != null && typeof e == 'object' && 'nodeType' in e; }
	function isObject(v) { return v != null && typeof v == 'object'; }

	var dom = {
		elem: isElem,
		append: function (node, children) {
			if (!isElem(node)) return null;
			if (Array.isArray(children)) {
				for (var i = 0; i < children.length; i++) {
					if (isElem(children[i])) node.appendChild(children[i]);
					else node.appendChild(document.createTextNode('' + children[i]));
				}
				return node.lastChild;
			}
			if (typeof children == 'function') return dom.append(node, children(node));
			if (isElem(children)) return node.appendChild(children);
			if (children != null) { node.innerHTML = '' + children; return node.lastChild; }
			return null;
		},
		content: function (node, children) {
			if (!isElem(node)) return null;
			while (node.firstChild) node.removeChild(node.firstChild);
			return dom.append(node, children);
		},
		attr: function (node, attrs) {
			for (var k in attrs) {
				if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] == null) continue;
				var v = attrs[k];
				if (typeof v == 'function') node.addEventListener(k, v);
				else if (typeof v == 'object') node.setAttribute(k, JSON.stringify(v));
				else node.setAttribute(k, v);
			}
		},
		create: function (tag, attrs, children) {
			if (!(attrs instanceof Object) || Array.isArray(attrs)) {
				children = attrs;
				attrs = null;
			}
			var node;
			if (Array.isArray(tag)) {
				node = document.createDocumentFragment();
				for (var i = 0; i < tag.length; i++) node.appendChild(dom.create(tag[i]));
			}
			else if (isElem(tag)) node = tag;
			else if (tag.charCodeAt(0) === 60) throw new Error('stand-in: E() with HTML markup is not supported');
			else node = document.createElement(tag);
			if (attrs) dom.attr(node, attrs);
			dom.append(node, children);
			return node;
		}
	};

	function E() { return dom.create.apply(dom, arguments); }

	/* LuCI's classes are constructors; `require` instantiates each one once. */
	function Class() {}
	Class.extend = function (proto) {
		var parent = this;
		var klass = function () {
			if (typeof this.__init__ == 'function') this.__init__.apply(this, arguments);
		};
		klass.prototype = Object.create(parent.prototype);
		Object.assign(klass.prototype, proto);
		klass.prototype.constructor = klass;
		klass.extend = Class.extend;
		klass.super = parent.prototype;
		return klass;
	};
	var baseclass = Class;

	var rpcId = 0;
	var RPC = Class.extend({
		declare: function (d) {
			return function () {
				var given = arguments, args = {};
				(d.params || []).forEach(function (p, i) { args[p] = given[i]; });
				var desc = 'RPC call to ' + d.object + '/' + d.method;
				return fetch('/ubus', {
					method: 'POST',
					headers: { 'Content-Type': 'application/json' },
					body: JSON.stringify({ jsonrpc: '2.0', id: ++rpcId, method: 'call',
						params: [ SESSION, d.object, d.method, args ] })
				}).then(function (r) {
					if (!r.ok) throw rpcError(desc + ' failed with HTTP error ' + r.status);
					return r.json();
				}).then(function (msg) {
					if (!isObject(msg) || msg.jsonrpc != '2.0')
						throw rpcError(desc + ' returned invalid message frame');
					if (isObject(msg.error) && msg.error.code && msg.error.message)
						throw rpcError(desc + ' failed with error ' + msg.error.code + ': ' + msg.error.message);
					var ret = null;
					if (Array.isArray(msg.result)) {
						if (d.reject && msg.result[0] !== 0)
							throw rpcError(desc + ' failed with ubus code ' + msg.result[0] + ': ' +
								(STATUS[msg.result[0]] || 'Unknown error code'));
						ret = msg.result.length > 1 ? msg.result[1] : msg.result[0];
					}
					if (d.expect) {
						for (var key in d.expect) {
							if (ret != null && key != '') ret = ret[key];
							if (ret == null || typeOf(ret) != typeOf(d.expect[key])) ret = d.expect[key];
							break;
						}
					}
					return typeof d.filter == 'function' ? d.filter(ret, args) : ret;
				});
			};
		}
	});
	var STATUS = { 1: 'Invalid command', 2: 'Invalid argument', 3: 'Method not found',
		4: 'Resource not found', 5: 'No data received', 6: 'Permission denied', 7: 'Request timeout' };
	function typeOf(v) { return Object.prototype.toString.call(v); }
	function rpcError(message) {
		var e = new Error(message);
		e.name = 'RPCError';
		return e;
	}
	var rpc = new RPC();

	/* LuCI's poll: a function is added once (false the second time) and runs
	 * every `seconds`, never twice at once, until poll.remove(fn). */
	var pollQueue = [];
	var Poll = Class.extend({
		add: function (fn, seconds) {
			if (typeof fn != 'function' || isNaN(seconds))
				throw new TypeError('Invalid argument to LuCI.poll.add()');
			for (var i = 0; i < pollQueue.length; i++)
				if (pollQueue[i].fn === fn) return false;
			var e = { fn: fn };
			function tick() {
				if (pollQueue.indexOf(e) < 0) return;
				Promise.resolve().then(fn).catch(function (err) { console.error('poll: ' + err); })
					.then(function () { if (pollQueue.indexOf(e) >= 0) e.timer = window.setTimeout(tick, seconds * 1000); });
			}
			pollQueue.push(e);
			e.timer = window.setTimeout(tick, seconds * 1000);
			return true;
		},
		remove: function (fn) {
			if (typeof fn != 'function')
				throw new TypeError('Invalid argument to LuCI.poll.remove()');
			var len = pollQueue.length;
			pollQueue = pollQueue.filter(function (e) {
				if (e.fn !== fn) return true;
				window.clearTimeout(e.timer);
				return false;
			});
			return pollQueue.length != len;
		}
	});

	var UI = Class.extend({
		addNotification: function (title, children) {
			var mc = document.querySelector('#maincontent') || document.body;
			var msg = E('div', { 'class': 'alert-message fade-in' }, [
				E('div', {}), E('div', {}, [ E('button', { 'class': 'btn' }, [ _('Dismiss') ]) ])
			]);
			if (title != null) dom.append(msg.firstElementChild, E('h4', {}, title));
			dom.append(msg.firstElementChild, children);
			for (var i = 2; i < arguments.length; i++) msg.classList.add(arguments[i]);
			mc.insertBefore(msg, mc.firstElementChild);
			return msg;
		},
		showModal: function (title, children) {
			var overlay = modalOverlay();
			var dlg = overlay.firstElementChild;
			dlg.setAttribute('class', 'modal');
			for (var i = 2; i < arguments.length; i++) dlg.classList.add(arguments[i]);
			dom.content(dlg, dom.create('h4', {}, title));
			dom.append(dlg, children);
			document.body.classList.add('modal-overlay-active');
			overlay.scrollTop = 0;
			overlay.focus();
			return dlg;
		},
		hideModal: function () {
			var overlay = document.getElementById('modal_overlay');
			document.body.classList.remove('modal-overlay-active');
			if (overlay) overlay.blur();
		},
		createHandlerFn: function (ctx, fn) {
			if (typeof fn == 'string') fn = ctx[fn];
			if (typeof fn != 'function') return null;
			var extra = Array.prototype.slice.call(arguments, 2);
			return function (ev) {
				var t = ev.currentTarget;
				t.classList.add('spinning');
				t.disabled = true;
				Promise.resolve(fn.apply(ctx, extra.concat([ ev ]))).finally(function () {
					t.classList.remove('spinning');
					t.disabled = false;
				});
			};
		}
	});

	/* LuCI's ui.js makes the overlay when it starts; here, when a modal is first shown */
	function modalOverlay() {
		var overlay = document.getElementById('modal_overlay');
		if (overlay) return overlay;
		document.head.appendChild(E('style', {}, [
			'#modal_overlay{position:fixed;top:0;bottom:0;left:0;right:0;background:rgba(0,0,0,.6);' +
			'z-index:900;overflow:auto;visibility:hidden}' +
			'body.modal-overlay-active #modal_overlay{visibility:visible}' +
			'.modal{width:90%;max-width:600px;margin:5em auto;background:#fff;padding:1em}' +
			'.modal > pre{overflow:auto;width:100%}' ]));
		overlay = E('div', { 'id': 'modal_overlay', 'tabindex': -1 }, [
			E('div', { 'class': 'modal', 'role': 'dialog', 'aria-modal': true }) ]);
		document.body.appendChild(overlay);
		return overlay;
	}

	var uciData = {};
	var callUciGet = rpc.declare({ object: 'uci', method: 'get', params: [ 'config' ],
		expect: { values: {} }, reject: true });
	var callSessionAccess = rpc.declare({ object: 'session', method: 'access',
		params: [ 'scope', 'object', 'function' ], expect: { access: false } });
	var Uci = Class.extend({
		load: function (pkg) {
			return callUciGet(pkg).then(function (values) { uciData[pkg] = values; return pkg; });
		},
		get: function (pkg, section, option) {
			var s = (uciData[pkg] || {})[section];
			if (s == null) return null;
			return option == null ? s : (s[option] == null ? null : s[option]);
		},
		sections: function (pkg, type) {
			var all = uciData[pkg] || {};
			return Object.keys(all).map(function (k) { return all[k]; })
				.filter(function (s) { return type == null || s['.type'] == type; })
				.sort(function (a, b) { return a['.index'] - b['.index']; });
		},
		add: function (pkg, type, name) {
			var all = uciData[pkg] = uciData[pkg] || {};
			all[name] = { '.name': name, '.type': type, '.anonymous': false, '.index': Object.keys(all).length };
			return name;
		},
		set: function (pkg, sid, option, value) {
			var s = (uciData[pkg] || {})[sid];
			if (s != null) s[option] = value;
		}
	});
	var uci = new Uci();

	function Option(kind, name, title, descr) {
		this.kind = kind; this.name = name; this.title = title; this.descr = descr;
		this.values = [];
	}
	Option.prototype.value = function (v, label) { this.values.push([ v, label ]); };

	function Section(map, name, type, title) {
		this.map = map; this.name = name; this.type = type; this.title = title;
		this.options = [];
	}
	/* the sections it shows: its own (NamedSection), or every one of its type */
	Section.prototype.cfgsections = function () {
		if (!this.typed) return [ this.name ];
		return uci.sections(this.map.config, this.type).map(function (s) { return s['.name']; });
	};
	function TypedSection() {}
	TypedSection.prototype = Object.create(Section.prototype);
	TypedSection.prototype.handleAdd = function (ev, name) {
		this.map.data.add(this.map.config, this.type, name);
		return this.map.save(null, true);
	};
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
		this.readonly = null;
	}
	FormMap.prototype.section = function (kind, name, type, title) {
		var s;
		if (typeof kind == 'function') {  /* TypedSection, GridSection: (type, title, descr) */
			s = Object.assign(Object.create(kind.prototype), new Section(this, null, name, type));
			s.typed = true;
		}
		else
			s = new Section(this, name, type, title);
		this.sections.push(s);
		return s;
	};
	FormMap.prototype.save = function (cb, silent) {
		var map = this;
		return Promise.resolve(cb && cb()).then(function () { return map.renderContents(); });
	};
	FormMap.prototype.load = function () {
		var map = this;
		return Promise.all([
			map.readonly == null ? callSessionAccess('uci', map.config, 'write') : true,
			uci.load(map.config)
		]).then(function (res) {
			if (res[0] === false) map.readonly = true;
		});
	};
	FormMap.prototype.renderOption = function (sid, o) {
		var map = this, v = uci.get(map.config, sid, o.name);
		return E('div', { 'class': 'cbi-value', 'data-name': o.name }, [
			E('label', { 'class': 'cbi-value-title' }, o.title),
			E('input', { 'name': 'cbid.' + map.config + '.' + sid + '.' + o.name,
				'value': Array.isArray(v) ? v.join(' ') : (v == null ? '' : v),
				'placeholder': o.placeholder || null,
				'disabled': map.readonly ? '' : null }),
			E('div', { 'class': 'cbi-value-description' }, o.descr || '')
		]);
	};
	FormMap.prototype.renderSection = function (s) {
		var map = this;
		var id = 'cbi-' + map.config + '-' + (s.typed ? s.type : s.name);
		if (!s.typed)
			return E('div', { 'class': 'cbi-section', 'id': id }, [
				E('h3', {}, s.title),
				E(s.options.map(function (o) { return map.renderOption(s.name, o); }))
			]);
		return E('div', { 'class': 'cbi-section', 'id': id }, [
			E('h3', {}, s.title),
			E('table', { 'class': 'table cbi-section-table' }, s.cfgsections().map(function (sid) {
				return E('tr', { 'class': 'tr cbi-section-table-row', 'data-sid': sid }, [
					E('td', { 'class': 'td cbi-section-table-titles' }, [ sid ]),
					E('td', { 'class': 'td' }, s.options.map(function (o) { return map.renderOption(sid, o); }))
				]);
			}))
		]);
	};
	FormMap.prototype.renderContents = function () {
		var map = this;
		var node = E('div', { 'class': 'cbi-map', 'id': 'cbi-' + map.config }, [
			E('h2', {}, map.title), E('div', { 'class': 'cbi-map-descr' }, map.descr),
			E(map.sections.map(function (s) { return map.renderSection(s); }))
		]);
		if (map.root && map.root.parentNode) map.root.parentNode.replaceChild(node, map.root);
		return (map.root = node);
	};
	FormMap.prototype.render = function () {
		var map = this;
		map.data = uci;
		return map.load().then(function () { return map.renderContents(); });
	};
	var Form = Class.extend({
		Map: FormMap, NamedSection: 'NamedSection', TypedSection: TypedSection,
		GridSection: TypedSection, Flag: 'Flag', Value: 'Value',
		DynamicList: 'DynamicList', ListValue: 'ListValue'
	});

	var View = Class.extend({
		load: function () { return Promise.resolve(); },
		render: function () { return E('div'); }
	});

	var classes = { baseclass: baseclass, rpc: rpc, poll: new Poll(), dom: dom, ui: new UI(),
		uci: uci, form: new Form(), view: View };

	function load(name) {
		if (classes[name]) return Promise.resolve(classes[name]);
		var url = '/luci-static/resources/' + name.replace(/\./g, '/') + '.js';
		classes[name] = fetch(url).then(function (r) {
			if (!r.ok) throw new Error('cannot load ' + url + ': ' + r.status);
			return r.text();
		}).then(function (source) {
			var deps = [], names = [], m;
			var re = /^\s*'require\s+([\w.]+)(?:\s+as\s+(\w+))?';/gm;
			while ((m = re.exec(source)) != null) {
				deps.push(m[1]);
				names.push(m[2] || m[1].replace(/[^a-zA-Z0-9_]/g, '_'));
			}
			return Promise.all(deps.map(load)).then(function (instances) {
				var factory = new Function([ 'window', 'document', 'L' ].concat(names).join(','),
					source + '\n//# sourceURL=' + url);
				var klass = factory.apply(factory, [ window, document, window.L ].concat(instances));
				if (typeof klass != 'function' || !(klass.prototype instanceof Class))
					throw new TypeError('"' + name + '" factory yields invalid constructor');
				return (classes[name] = new klass());
			});
		});
		return classes[name];
	}

	window.E = E;
	window._ = _;
	window.L = {
		env: { sessionid: SESSION, ubuspath: '/ubus/',
			nodespec: { satisfied: true, readonly: READONLY } },
		require: load,
		bind: function (fn, self) {
			var extra = Array.prototype.slice.call(arguments, 2);
			return function () { return fn.apply(self, extra.concat(Array.prototype.slice.call(arguments))); };
		},
		resolveDefault: function (p, def) { return Promise.resolve(p).catch(function () { return def; }); },
		hasViewPermission: function () {
			var spec = this.env.nodespec;
			if (!isObject(spec) || !spec.satisfied) return null;
			return !spec.readonly;
		},
		isObject: isObject,
		url: function () { return '/cgi-bin/luci/' + Array.prototype.join.call(arguments, '/'); }
	};

	/* like LuCI's dispatcher: the view's instance loads, then renders into #view */
	window.showView = function (name) {
		return load(name).then(function (v) {
			window.currentView = v;
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
