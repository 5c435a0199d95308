"""Where the store driver's log goes (ingest/store/logs.py): a file, never stderr."""

from __future__ import annotations

import logging
from pathlib import Path

from ingest.store import logs


def test_log_file_from_the_environment(tmp_path):
    assert logs.log_file({"NEURFLOW_LOG_FILE": str(tmp_path / "n.log")}) == tmp_path / "n.log"
    assert logs.log_file({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "neurflow" / "neurflow.log"


def test_driver_warnings_go_to_the_file_once_and_a_bad_file_is_silent(tmp_path, capsys):
    logger = logging.getLogger("neo4j")
    before, propagate = list(logger.handlers), logger.propagate
    try:
        for h in [h for h in logger.handlers if isinstance(h, logs._QuietFileHandler)]:
            logger.removeHandler(h)
        path = logs.route_driver_logs({"NEURFLOW_LOG_FILE": str(tmp_path / "sub" / "n.log")})
        assert logs.route_driver_logs({"NEURFLOW_LOG_FILE": str(tmp_path / "other.log")}) == path  # the first stays
        assert sum(isinstance(h, logs._QuietFileHandler) for h in logger.handlers) == 1
        assert not path.exists()  # opened at the first message only
        logging.getLogger("neo4j.pool").warning("Transaction failed and will be retried in %s s", 1.0)
        assert "neo4j.pool WARNING: Transaction failed and will be retried in 1.0 s" in path.read_text()
        blocked = tmp_path / "file"
        blocked.write_text("")
        bad = logs._QuietFileHandler(Path(blocked / "cannot" / "n.log"), delay=True)
        bad.emit(logging.LogRecord("neo4j", logging.WARNING, __file__, 1, "lost", None, None))
        assert capsys.readouterr().err == ""
    finally:
        for h in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(h)
            h.close()
        for h in before:
            if h not in logger.handlers:
                logger.addHandler(h)
        logger.propagate = propagate
