"""Regenerate luci-app-owsync's owsync/examples.js from owsync/core/examples.py.

python3 scripts/genexamples.py      (from the top of the repository)

The shipped sync groups are declared once, in Python; LuCI's Settings page
offers the same ones as ready choices.  tests/test_luci_app.py holds the
JavaScript copy equal to the Python table.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from owsync.core.examples import EXAMPLES  # noqa: E402

FIELDS = ("name", "why", "dir", "include", "exclude", "reload", "restart")
TARGET = Path("luci/luci-app-owsync/htdocs/luci-static/resources/owsync/examples.js")
HEAD = """'use strict';
'require baseclass';

/*
 * The shipped sync groups, offered as ready choices on the Settings page:
 * each one's name (its UCI section), why an HA pair wants it, its directory,
 * patterns and the services it reloads or restarts.
 *
 * Generated from owsync/core/examples.py by scripts/genexamples.py: do not
 * edit by hand (tests/test_luci_app.py holds the two equal).
 */

var EXAMPLES = """
TAIL = """;

return baseclass.extend({
	list: function() {
		return EXAMPLES;
	}
});
"""


def render(examples) -> str:
    table = [{k: (list(e[k]) if isinstance(e[k], (list, tuple)) else e[k]) for k in FIELDS}
             for e in examples]  # fmt: skip
    return HEAD + json.dumps(table, indent="\t", ensure_ascii=False) + TAIL


if __name__ == "__main__":
    TARGET.write_text(render(EXAMPLES))
    print(len(EXAMPLES))
