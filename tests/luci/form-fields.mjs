// Runs a LuCI form view's render() outside LuCI and prints, as JSON, every
// field it defines: section, widget class, option name and the properties a
// field carries (datatype, placeholder, default, rmempty, ListValue values).
// Usage: node form-fields.mjs VIEW.js
// The view's 'require' modules are stand-ins: `form` records the fields,
// the others accept any call.  Nothing of the page is rendered.
import { readFileSync } from 'node:fs';

if (!String.prototype.format) {
	String.prototype.format = function (...args) {
		let i = 0;
		return this.replace(/%([sdh%])/g, (m, t) => (t === '%' ? '%' : String(args[i++])));
	};
}

// any call, any property: itself (a Promise-like for .then)
function anything() {
	const f = function () { return proxy; };
	const proxy = new Proxy(f, {
		get: (t, k) => (k === 'then' ? undefined : k === Symbol.toPrimitive ? () => '' : proxy),
		apply: () => proxy,
		construct: () => proxy
	});
	return proxy;
}

const fields = [];

class Field {
	constructor(section, widget, name) {
		Object.assign(this, { section, widget, name, options: [] });
	}
	value(key) { this.options.push(String(key)); }
	depends() {}
}

class Section {
	// NamedSection: (name, type); the others: (type)
	constructor(widget, args) {
		const named = widget === 'NamedSection';
		Object.assign(this, { widget, name: named ? args[0] : null, type: named ? args[1] : args[0] });
	}
	tab() {}
	taboption(tab, widget, name) { return this.option(widget, name); }
	option(widget, name) {
		const f = new Field(this, widget, name);
		fields.push(f);
		return f;
	}
}

const widgets = ['Flag', 'Value', 'DynamicList', 'ListValue', 'MultiValue', 'DummyValue',
	'TextValue', 'HiddenValue', 'Button', 'SectionValue', 'RichListValue'];
const sections = ['NamedSection', 'TypedSection', 'TableSection', 'GridSection'];
const form = {};
for (const w of widgets) form[w] = w;
for (const s of sections) form[s] = s;
form.Map = function () {
	return {
		section: (widget, ...args) => new Section(widget, args),
		render: () => Promise.resolve(null)
	};
};

const path = process.argv[2];
const body = readFileSync(path, 'utf8');
const modules = { form, view: { extend: (proto) => proto } };
const names = [];
const values = [];
for (const m of body.matchAll(/^'require ([\w.]+)(?: as (\w+))?';$/gm)) {
	const name = m[2] ?? m[1].split('.').pop();
	names.push(name);
	values.push(modules[name] ?? anything());
}
globalThis.L = anything();
globalThis.E = anything();
globalThis._ = (s) => s;
const proto = new Function(...names, body)(...values);
proto.writable = () => true;
await proto.render([null, null]);
const out = fields.map((f) => ({
	section: f.section.name, section_type: f.section.type, widget: f.widget, name: f.name,
	options: f.options,
	datatype: f.datatype ?? null, placeholder: f.placeholder ?? null,
	default: f.default ?? null, rmempty: f.rmempty ?? null
}));
process.stdout.write(JSON.stringify(out, null, 1) + '\n');
