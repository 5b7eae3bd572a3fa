"""The layout of the tests themselves.

Shared test helpers live in one helpers module, tests/conftest.py: a test file
that imports from another test file runs that file's module-level code (its
skip marks, fixtures, environment reads) in the wrong place and hides a helper
where the next reader does not look for it.
"""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).parent


def imports_of_test_files(top: Path) -> list[str]:
    """Every import of a test_*.py module of ``top`` by a .py file there, at any depth
    (module level or inside a function), as ``file:line imports module``."""
    tests = {p.stem for p in top.glob("test_*.py")}
    found = []
    for path in sorted(top.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level:  # from . import test_x
                    names += [a.name for a in node.names]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", ""))
                in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            else:
                continue
            found += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in tests
            ]
    return sorted(found, key=lambda f: (f.split(":")[0], int(f.split(":")[1].split()[0])))


def test_no_test_file_imports_from_another_test_file():
    assert imports_of_test_files(HERE) == [], "move the helper into tests/conftest.py"


def test_the_check_finds_every_kind_of_import_of_a_test_file(tmp_path):
    (tmp_path / "conftest.py").write_text("def helper():\n    return 1\n")
    (tmp_path / "test_b.py").write_text("from conftest import helper\n\nX = helper()\n")
    (tmp_path / "test_a.py").write_text(
        "import importlib\n"
        "from test_b import X\n"
        "import test_b as b, os\n"
        "def test_x():\n"
        "    from test_b import X as Y\n"
        "    importlib.import_module('test_b')\n"
    )
    (tmp_path / "standin.py").write_text("from . import test_b\n")
    assert imports_of_test_files(tmp_path) == [
        "standin.py:1 imports test_b",
        "test_a.py:2 imports test_b",
        "test_a.py:3 imports test_b",
        "test_a.py:5 imports test_b",
        "test_a.py:6 imports test_b",
    ]
