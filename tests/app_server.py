"""The app as a visitor's browser meets it: `streamlit run` on a free port, ready when its health
endpoint answers, stopped afterwards.  Shared by the browser tests."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cli.app_commands import streamlit_command
from ingest.store.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_app(env: dict[str, str], log_path: Path, *, start_timeout: float = 60) -> Iterator[str]:
    """Start the app with `env`, its output in `log_path`; yields its URL and stops it on exit."""
    port = free_port()
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(streamlit_command(port), env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log_path}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
