// Loads a LuCI class file (one that ends in `return baseclass.extend({...})`)
// outside LuCI: the file's body runs as a function given a stand-in baseclass
// and `_`, and String.prototype.format, as LuCI provides them.
import { readFileSync } from 'node:fs';

if (!String.prototype.format) {
	String.prototype.format = function (...args) {
		let i = 0;
		return this.replace(/%([sd%])/g, (m, t) => {
			if (t === '%') return '%';
			const v = args[i++];
			return t === 'd' ? String(Math.trunc(Number(v))) : String(v);
		});
	};
}

export function loadClass(path) {
	const body = readFileSync(path, 'utf8');
	const baseclass = { extend: (proto) => proto };
	return new Function('baseclass', '_', body)(baseclass, (s) => s);
}
