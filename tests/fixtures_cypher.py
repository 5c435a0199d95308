"""Cypher recording for the lint at the end of the session (a pytest plugin, listed in tests/conftest.py).

- At configure time ``NEURFLOW_RECORD_CYPHER`` is pointed at a fresh temporary file (unless the
  caller set it), so the store layer (`ingest.store.cypher_record`) of this process and of the
  subprocesses the tests start records every distinct statement it sends.
- tests/test_zz_cypher_lint.py is moved to the end of the run, whatever order the files were
  given in, so that it lints what the whole session sent.
- Its summary ("N statements checked by Neo4j's Cypher front end ...") is printed at the end of
  the terminal report.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from ingest.store.cypher_record import ENV

LINT_MODULE = "test_zz_cypher_lint.py"
SUMMARY = pytest.StashKey[list]()
_created: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARY] = []
    if os.environ.get(ENV):
        return  # the caller records somewhere of its own
    fd, path = tempfile.mkstemp(prefix="neurflow-cypher-", suffix=".jsonl")
    os.close(fd)
    os.environ[ENV] = path
    _created.append(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _created:
        path = _created.pop()
        if os.environ.get(ENV) == path:
            del os.environ[ENV]
        try:
            os.remove(path)
        except OSError:
            pass


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.name == LINT_MODULE]
    if last:
        items[:] = [item for item in items if item.path.name != LINT_MODULE] + last


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ARG001
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("Cypher lint (Neo4j's Cypher front end)")
        for line in lines:
            terminalreporter.write_line(line)
