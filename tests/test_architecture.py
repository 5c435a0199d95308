"""Dependencies point one way: `cli` -> `app` / `ingest` -> `neurflow`, and no module imports its
own importers back, lazily or not (imports under `if TYPE_CHECKING:` do not run and are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("neurflow", "ingest", "app", "cli")
LAYER = {"neurflow": 0, "ingest": 1, "app": 2, "cli": 3}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _runtime_imports(tree: ast.AST):
    """Import nodes that run: everything except the bodies of `if TYPE_CHECKING:`."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
            yield node


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level == 0 and node.module:
                # `from pkg import sub` imports the module pkg.sub (pkg's __init__ runs first, but
                # that is pkg importing its own parts, not a dependency back)
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            else:
                continue
            graph[m] |= {t for t in targets if t in mods and t != m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_dependencies_point_down_from_the_command_line_to_the_method():
    """The app reads the store through ingest; ingest knows no app; nothing below imports cli."""
    upward = [(m, t) for m, targets in import_graph().items() for t in targets
              if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert upward == [], upward


def test_the_method_package_has_no_command_line_and_no_store():
    for path in (ROOT / "neurflow").rglob("*.py"):
        names = {a.name for node in _runtime_imports(ast.parse(path.read_text())) if isinstance(node, ast.Import) for a in node.names}
        froms = {node.module for node in _runtime_imports(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "argparse" not in names, path
        assert not any((f or "").split(".")[0] in ("ingest", "app", "cli", "neo4j", "streamlit") for f in froms), path


def test_the_console_script_is_the_command_line_package():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'neurflow = "cli.main:main"' in text


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


MAX_LINES, MAX_PARAMS = 100, 8


def _oversized(tree: ast.AST, where: str) -> list[str]:
    """Functions over MAX_LINES lines, and public ones over MAX_PARAMS parameters (self/cls not
    counted): a list of parameters that long wants a named type, a function that long a split."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
            count = len([p for p in params if p.arg not in ("self", "cls")])
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES or (count > MAX_PARAMS and not node.name.startswith("_")):
                out.append(f"{where}:{node.lineno} {node.name}: {lines} lines, {count} parameters")
    return out


def test_functions_are_short_and_take_few_parameters():
    """ingest/, app/ and cli/: no function over 100 lines, no public function over 8 parameters."""
    found = [line for pkg in ("ingest", "app", "cli") for path in sorted((ROOT / pkg).rglob("*.py"))
             for line in _oversized(ast.parse(path.read_text()), str(path.relative_to(ROOT)))]
    assert found == [], found


def test_the_size_checker_sees_long_functions_and_long_parameter_lists():
    long_body = "def f():\n" + "    x = 1\n" * 100
    assert _oversized(ast.parse(long_body), "m") == ["m:1 f: 101 lines, 0 parameters"]
    assert _oversized(ast.parse("def g(a, b, c, d, e, f, g, h, *, i=1): pass"), "m") == ["m:1 g: 1 lines, 9 parameters"]
    assert _oversized(ast.parse("def _h(a, b, c, d, e, f, g, h, i): pass\nclass C:\n    def m(self, a, b, c, d, e, f, g, h): pass"), "m") == []
