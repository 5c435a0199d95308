"""Where the store driver's log goes: messages for whoever investigates later, not for the terminal.

The store driver (`neo4j`) logs a warning for every retry of a transaction ("Transaction failed
and will be retried in ..."); with no handler Python prints those on stderr, so a store that
died mid-ingest buried the command's one `error:` line under a screen of them.  `route_driver_logs`
sends the driver's log to `log_file()` instead (called by `cli.main` for every command and by
each Ray class task, `ingest.jobs.ray_executor.run_class`):

- ``NEURFLOW_LOG_FILE``: that file;
- else ``$XDG_STATE_HOME/neurflow/neurflow.log`` (default ``~/.local/state/neurflow/neurflow.log``).

The file is opened at the first message only, and a file that cannot be written drops the
messages silently: a log must never be the reason a command fails.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

LOGGERS = ("neo4j",)  # the store driver's loggers (neo4j.session, neo4j.pool, neo4j.io, ...)


def log_file(env: Mapping[str, str] | None = None) -> Path:
    """The file the commands log to (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("NEURFLOW_LOG_FILE"):
        return Path(env["NEURFLOW_LOG_FILE"]).expanduser()
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "neurflow" / "neurflow.log"


class _QuietFileHandler(logging.FileHandler):
    """A file handler that creates its folder when it first writes and stays silent when it cannot
    (logging's default prints a traceback on stderr, the very thing this file keeps off it)."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            try:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's hook
        pass


def route_driver_logs(env: Mapping[str, str] | None = None) -> Path:
    """Send the store driver's log (warnings and above) to `log_file()`, not to stderr; idempotent
    (the path of the first call stays).  Returns the file."""
    path = log_file(env)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        ours = [h for h in logger.handlers if isinstance(h, _QuietFileHandler)]
        if ours:
            path = Path(ours[0].baseFilename)
            continue
        handler = _QuietFileHandler(path, delay=True, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s pid %(process)d %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    return path
