"""Regenerate luci-app-owsync's po/templates/owsync.pot from its JavaScript and menu.

python3 scripts/genpot.py      (from the top of the repository)
"""

import re
from pathlib import Path

app = Path("luci/luci-app-owsync")
files = [app / "htdocs/luci-static/resources/owsync/format.js",
         *sorted((app / "htdocs/luci-static/resources/view/owsync").glob("*.js"))]  # fmt: skip
refs = {}
for f in files:
    for i, line in enumerate(f.read_text().splitlines(), 1):
        for m in re.finditer(r"_\('((?:[^'\\]|\\.)*)'\)", line):
            s = m.group(1).replace("\\'", "'")
            refs.setdefault(s, []).append(f"{f.relative_to(app)}:{i}")
menu = app / "root/usr/share/luci/menu.d/luci-app-owsync.json"
for i, line in enumerate(menu.read_text().splitlines(), 1):
    m = re.search(r'"title":\s*"([^"]*)"', line)
    if m:
        refs.setdefault(m.group(1), []).append(f"{menu.relative_to(app)}:{i}")
out = ['msgid ""', 'msgstr "Content-Type: text/plain; charset=UTF-8"', ""]
for s, r in refs.items():
    esc = s.replace("\\", "\\\\").replace('"', '\\"')
    out += [f"#: {x}" for x in r] + [f'msgid "{esc}"', 'msgstr ""', ""]
(app / "po/templates/owsync.pot").write_text("\n".join(out))
print(len(refs))
