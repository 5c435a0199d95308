"""Neo4j's Cypher front end as a linter for the project's statements (used by tests/test_zz_cypher_lint.py).

The front end is Neo4j's npm package ``@neo4j-cypher/language-support`` (its parser and semantic
analysis), installed by ``make cypher-lint`` into ``.cypher-lint/`` at the version pinned in the
Makefile.  `lint` runs ``lint.mjs`` (next to this file) once for a list of statements.

Statements come from two places:

- `recorded`: what the store layer sent during the test session (`ingest.store.cypher_record`, the
  file named by ``NEURFLOW_RECORD_CYPHER``; tests/fixtures_cypher.py sets it for the session);
- `static_statements`: the library (``QUERIES``), the app's ``APP_QUERIES`` (ingest/queries/app_reads.py),
  the schema statements, the module-level statements (``Q_*``, ``*_CYPHER``) of the ingest/
  modules that have them (the query modules, the writer's, the jobs'), and every
  plain string literal passed as Cypher to a ``run`` / ``write`` / ``read`` call in ingest/,
  app/, cli/, neurflow/ and bench/ (statements built with f-strings, like the export's
  per-label reads, are checked as recorded, with their values).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LINT_DIR = ROOT / ".cypher-lint"
SCRIPT = Path(__file__).with_name("lint.mjs")
PACKAGE = "@neo4j-cypher/language-support"
CACHE_SIZE = 5000  # answers kept in .cypher-lint/cache.json
REQUIRE_ENV = "NEURFLOW_REQUIRE_CYPHER_LINT"  # set (CI): a missing linter fails instead of skipping

_CYPHER_START = re.compile(r"^\s*(MATCH|OPTIONAL|MERGE|CREATE|UNWIND|WITH|CALL|RETURN|SHOW|DROP|LOAD|FOREACH|USE|INSERT)\b")
_STATEMENT_NAME = re.compile(r"^Q_|_CYPHER$")  # module-level statement constants
_STATEMENT_CALLS = {"run": 0, "write": 0, "read": 0, "_delete_loop": 1}  # callee -> position of the Cypher argument


def pinned_version() -> str | None:
    """The linter version the Makefile pins (CYPHER_LINT_VERSION)."""
    m = re.search(r"^CYPHER_LINT_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    return m.group(1) if m else None


def missing() -> str | None:
    """Why the linter cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed: Neo4j's Cypher front end (an npm package) cannot run; install Node.js and run `make cypher-lint`"
    if not (LINT_DIR / "node_modules" / PACKAGE / "package.json").is_file():
        return f"{PACKAGE} is not installed in {LINT_DIR.name}/: run `make cypher-lint` (needs node and npm)"
    return None


def lint(statements: list[dict[str, Any]], timeout: float = 600) -> dict[str, Any]:
    """Lint `statements` ([{name, query, parameters?}]) in one node process; see lint.mjs for the answer.

    Answers are cached in ``.cypher-lint/cache.json`` under the statement and its declared
    parameters, for this linter version and this lint.mjs (a fresh install starts empty): a
    run lints only statements it has not seen.  ``cached`` in the answer says how many came
    from the cache."""
    salt = hashlib.sha256(SCRIPT.read_bytes() + (LINT_DIR / "node_modules" / PACKAGE / "package.json").read_bytes()).hexdigest()
    path = LINT_DIR / "cache.json"
    try:
        cache = json.loads(path.read_text())
        if cache.get("salt") != salt:
            raise ValueError("another linter")
    except (OSError, ValueError):
        cache = {"salt": salt, "meta": None, "results": {}}
    keys = [hashlib.sha256(json.dumps([s["query"], s.get("parameters")]).encode()).hexdigest() for s in statements]
    todo = {k: s for k, s in zip(keys, statements) if k not in cache["results"]}
    cached = sum(1 for k in keys if k not in todo)
    if todo or cache["meta"] is None:
        done = subprocess.run(
            ["node", str(SCRIPT), str(LINT_DIR)], input=json.dumps(list(todo.values())), capture_output=True, text=True,
            timeout=timeout, cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the Cypher linter failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        answer = json.loads(done.stdout)
        cache["meta"] = {k: v for k, v in answer.items() if k != "results"}
        for k, r in zip(todo, answer["results"]):
            cache["results"][k] = {key: v for key, v in r.items() if key != "name"}
        kept = {k: cache["results"].pop(k) for k in keys if k in cache["results"]}  # this run's last
        cache["results"].update(kept)
        for old in list(cache["results"])[: max(0, len(cache["results"]) - CACHE_SIZE)]:
            del cache["results"][old]
        tmp = path.with_name(f"cache.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    results = [{"name": s["name"], **cache["results"][k]} for k, s in zip(keys, statements)]
    return {**cache["meta"], "results": results, "cached": cached}


def recorded(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The statements recorded in `path` (JSON lines of ingest.store.cypher_record)."""
    if not path or not os.path.exists(path):
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a killed process
    return out


def _literal_statements(paths: list[Path]) -> list[tuple[str, str]]:
    """(``file:line``, text) of plain string literals passed as Cypher to run / write / read calls."""
    out = []
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            callee = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            args = []
            if callee in _STATEMENT_CALLS and len(node.args) > _STATEMENT_CALLS[callee]:
                args.append(node.args[_STATEMENT_CALLS[callee]])
            args += [k.value for k in node.keywords if k.arg == "cypher"]
            for a in args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and _CYPHER_START.match(a.value):
                    out.append((f"{rel}:{a.lineno}", a.value))
    return out


def _statement_modules() -> list[str]:
    """The ingest/ modules that define statements at module level (``Q_*``, ``*_CYPHER``): the
    writer, evaluations, labelling, image debugging, ...; found in the source, so that only
    those are imported."""
    out = []
    for path in sorted((ROOT / "ingest").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        if any(_STATEMENT_NAME.search(name) for name in names):
            out.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return out


def static_statements() -> list[tuple[str, str]]:
    """(name, text) of every statement the project's code holds, reached by a test or not."""
    from ingest.queries import export
    from ingest.queries.app_reads import APP_QUERIES
    from ingest.queries.library import QUERIES
    from ingest.store.schema import constraint_statements

    out: list[tuple[str, str]] = [(f"QUERIES[{q.name}]", q.cypher) for q in QUERIES]
    out += [(f"APP_QUERIES[{name}]", text) for name, text in APP_QUERIES.items()]
    out += [(f"schema.constraint_statements()[{i}]", s) for i, s in enumerate(constraint_statements())]
    out += [(f"export.statements()[{i}]", s) for i, s in enumerate(export.statements())]
    for module_name in _statement_modules():
        module = importlib.import_module(module_name)
        for attr, value in vars(module).items():
            if isinstance(value, str) and _STATEMENT_NAME.search(attr) and _CYPHER_START.match(value):
                out.append((f"{module_name}.{attr}", value))
    files = sorted(path for top in ("ingest", "app", "cli", "neurflow", "bench") for path in (ROOT / top).rglob("*.py"))
    out += _literal_statements(files)
    return out
