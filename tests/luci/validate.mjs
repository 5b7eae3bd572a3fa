// Runs LuCI's own validation.js (from a LuCI tree) on datatype/value pairs.
// Usage: node validate.mjs VALIDATION.js < [[datatype, value], ...]
// Prints a JSON list of booleans: whether LuCI's form accepts each value, as
// a field with that datatype checks it (a non-empty value, not optional).
import { readFileSync } from 'node:fs';

if (!String.prototype.format) {
	String.prototype.format = function (...args) {
		let i = 0;
		return this.replace(/%([sdf%])/g, (m, t) => (t === '%' ? '%' : String(args[i++])));
	};
}

// LuCI's class system, as far as validation.js uses it: extend() makes a
// class whose constructor calls __init__
const baseclass = {
	extend(proto) {
		const C = function (...args) {
			if (this.__init__)
				this.__init__(...args);
		};
		Object.assign(C.prototype, proto);
		return C;
	}
};
const L = { raise: (type, fmt, ...args) => { throw new Error(`${type}: ${fmt.format(...args)}`); } };
const field = { classList: { add() {}, remove() {} }, setAttribute() {}, removeAttribute() {} };

const body = readFileSync(process.argv[2], 'utf8');
const Factory = new Function('baseclass', 'L', '_', body)(baseclass, L, (s) => s);
const factory = new Factory();
const pairs = JSON.parse(readFileSync(0, 'utf8'));
const out = pairs.map(([datatype, value]) => {
	const v = factory.create(field, datatype, false);
	v.value = value;
	return v.vstack[0].apply(v, v.vstack[1]) === true;
});
process.stdout.write(JSON.stringify(out) + '\n');
