"""Recording of the Cypher statements the project sends to a store (for the test suite's lint).

When ``NEURFLOW_RECORD_CYPHER`` names a file, every statement the program's one runner
(`ingest.store.runner.Runner`, behind `Store.run` / `Store.write` too) runs successfully is appended
to it once per process as one JSON line::

    {"query": "...", "parameters": ["model", "uid"], "where": "ingest/write/writer.py:223 write_circuit"}

`parameters` are the names of the parameters the caller passed; `where` is the first caller
outside the store layer.  The same statement text with another parameter set is another line.
Unset (the default), `record` costs one environment lookup.  The test suite sets it for its
whole session (tests/fixtures_cypher.py) so that subprocesses record too, and lints what was
recorded with Neo4j's Cypher front end at the end (tests/test_zz_cypher_lint.py).

User Cypher of the read-only console is not recorded: it is the user's, not the project's.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Mapping

ENV = "NEURFLOW_RECORD_CYPHER"

_seen: set[tuple[str, str, tuple[str, ...]]] = set()
_lock = threading.Lock()
_STORE_LAYER = (
    "ingest/store/connection.py", "ingest/write/writer.py", "ingest/store/readonly.py", "ingest/store/cypher_record.py", "ingest/store/runner.py",
    "ingest/write/cleanup.py", "ingest/write/aggregates.py", "ingest/write/aggregate_maintenance.py", "ingest/write/group_labels.py",
)  # fmt: skip


def _where() -> str:
    """`path:line function` of the first frame outside the store layer (paths relative to the repo)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
    frame = sys._getframe(2)
    fallback = ""
    while frame is not None:
        path = frame.f_code.co_filename
        rel = path[len(root):] if path.startswith(root) else os.path.basename(path)
        here = f"{rel.replace(os.sep, '/')}:{frame.f_lineno} {frame.f_code.co_name}"
        fallback = fallback or here
        if rel.replace(os.sep, "/") not in _STORE_LAYER:
            return here
        frame = frame.f_back
    return fallback


def record(cypher: str, params: Mapping[str, Any] | None = None) -> None:
    """Append `cypher` (with the names of `params`) to the file named by ``NEURFLOW_RECORD_CYPHER``."""
    path = os.environ.get(ENV)
    if not path or not isinstance(cypher, str):
        return
    names = tuple(sorted(str(k) for k in (params or {})))
    key = (path, cypher, names)
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    try:
        line = json.dumps({"query": cypher, "parameters": list(names), "where": _where()}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write per line: lines of concurrent processes do not mix
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - recording must never break a store call
        pass
