"""The embedded ArcadeDB server: detached process, files, reuse, stale locks, ports, and clear errors."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import main
from ingest.store.config import DEFAULT_BOLT_PORT, DEFAULT_HTTP_PORT, StoreConfig, embedded_ports, external_config, store_dir
from ingest.store.connection import Store, running_config, start_store
from ingest.store.embedded import (
    _is_our_server,
    embedded_config,
    embedded_status,
    ensure_embedded_server,
    free_port,
    stop_embedded_server,
)
from ingest.store.errors import (
    PortInUse,
    StoreAuthError,
    StoreDatabaseNotFound,
    StoreError,
    StoreUnavailable,
)

ROOT = Path(__file__).resolve().parent.parent


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    return msg


# --------------------------------------------------------------------------- configuration
def test_defaults_and_overrides(tmp_path):
    assert embedded_ports({}) == (DEFAULT_BOLT_PORT, DEFAULT_HTTP_PORT) == (7697, 2490)
    assert store_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "neurflow" / "store"
    assert store_dir({"NEURFLOW_STORE_DIR": str(tmp_path / "s")}) == tmp_path / "s"
    assert embedded_ports({"NEURFLOW_STORE_BOLT_PORT": "7800", "NEURFLOW_STORE_HTTP_PORT": "2600"}) == (7800, 2600)
    with pytest.raises(StoreError, match="NEURFLOW_STORE_BOLT_PORT") as err:
        embedded_ports({"NEURFLOW_STORE_BOLT_PORT": "seven"})
    one_line(err.value)


def test_default_store_dir_is_a_user_data_dir():
    env = {k: v for k, v in os.environ.items() if k not in ("NEURFLOW_STORE_DIR", "XDG_DATA_HOME")}
    assert store_dir(env) == Path(os.path.expanduser("~")).resolve() / ".local" / "share" / "neurflow" / "store"


def test_external_config_from_environment():
    env = {
        "NEURFLOW_STORE_URI": "bolt://db:7687",
        "NEURFLOW_STORE_USER": "neo4j",
        "NEURFLOW_STORE_PASSWORD": "s3cret",
        "NEURFLOW_STORE_DATABASE": "graphs",
    }
    cfg = start_store(env)
    assert (cfg.uri, cfg.user, cfg.password, cfg.database, cfg.embedded) == ("bolt://db:7687", "neo4j", "s3cret", "graphs", False)
    assert cfg.readonly_auth == ("neo4j", "s3cret")  # no reader account configured: same login, READ mode
    assert "s3cret" not in repr(cfg) and external_config(env) == cfg


# --------------------------------------------------------------------------- the session's server
def test_server_files_and_permissions(store_server):
    data = Path(store_server.data_dir)
    state = json.loads((data / "server.json").read_text())
    assert state["host"] == "127.0.0.1" and state["bolt_port"] == int(store_server.uri.rsplit(":", 1)[1])
    for name in ("root", "reader"):
        path = data / "secrets" / f"{name}.password"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
    assert store_server.password and store_server.password == (data / "secrets" / "root.password").read_text().strip()
    # ArcadeDB's log/ lives in the data folder: the server process runs there
    assert (data / "log" / "arcadedb.log.0").is_file()
    assert Path(os.readlink(f"/proc/{state['pid']}/cwd")) == data


def _listeners(port: int) -> list[str]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _remote, st = line.split()[1:4]
            addr, p = local.split(":")
            if int(p, 16) == port and st == "0A":
                out.append(addr)
    return out


def test_server_listens_on_loopback_only(store_server):
    for port in (int(store_server.uri.rsplit(":", 1)[1]), store_server.http_port):
        addrs = _listeners(port)
        assert addrs, port
        for a in addrs:
            assert set(a) != {"0"}, f"port {port} listens on all interfaces"
            assert a.endswith("0100007F"), a  # 127.0.0.1 (IPv4 or IPv4-mapped IPv6)


def test_running_server_is_reused_here_and_by_another_process(store_server):
    data = store_server.data_dir
    pid = embedded_status(data)["pid"]
    again = ensure_embedded_server(data)
    assert again.uri == store_server.uri and embedded_status(data)["pid"] == pid
    code = f"from ingest.store.embedded import ensure_embedded_server as e; c = e({data!r}); print(c.uri)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == store_server.uri
    assert embedded_status(data)["pid"] == pid
    # start_store() without NEURFLOW_STORE_URI is the embedded server (the fixture pointed the env at it)
    assert start_store().uri == store_server.uri


def test_status_of_running_server(store_server):
    st = embedded_status(store_server.data_dir)
    assert st["running"] and st["answering"] and st["uri"] == store_server.uri and st["database"] == "neurflow"


# --------------------------------------------------------------------------- failures
def test_stale_lock_is_reported_and_cleared(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "server.json").write_text(json.dumps({"pid": dead.pid, "bolt_port": 1, "http_port": 2}))
    st = embedded_status(tmp_path)
    assert not st["running"]
    err = capsys.readouterr().err
    assert "stale lock" in err and str(dead.pid) in err and err.count("\n") == 1
    assert not (tmp_path / "server.json").exists()
    with pytest.raises(StoreUnavailable, match="neurflow store start") as e:
        embedded_config(tmp_path)
    one_line(e.value)


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            ensure_embedded_server(tmp_path, bolt_port=port, http_port=free_port())
    msg = one_line(err.value)
    assert str(port) in msg and "NEURFLOW_STORE_BOLT_PORT" in msg
    assert not (tmp_path / "server.json").exists()


def test_unreachable_store(tmp_path):
    cfg = StoreConfig(uri=f"bolt://127.0.0.1:{free_port()}", user="neo4j", password="x")
    with pytest.raises(StoreUnavailable) as err:
        Store(cfg)
    msg = one_line(err.value)
    assert "cannot reach" in msg and "NEURFLOW_STORE_URI" in msg


def test_bad_uri():
    with pytest.raises(StoreError) as err:
        Store(StoreConfig(uri="http://127.0.0.1:1", user="neo4j", password="x"))
    assert "NEURFLOW_STORE_URI" in one_line(err.value)


def test_wrong_password(store_server):
    cfg = StoreConfig(uri=store_server.uri, user="root", password="wrong-password", database="neurflow")
    with pytest.raises(StoreAuthError) as err:
        Store(cfg)
    msg = one_line(err.value)
    assert "refused the login" in msg and "NEURFLOW_STORE_PASSWORD" in msg


def test_unknown_database(store_server):
    with pytest.raises(StoreDatabaseNotFound) as err:
        Store(store_server.with_database("no_such_db"))
    msg = one_line(err.value)
    assert "no_such_db" in msg and "NEURFLOW_STORE_DATABASE" in msg


# --------------------------------------------------------------------------- start / stop / restart
def test_store_commands_start_stop_restart(tmp_path, monkeypatch, capsys, store_server):
    data = tmp_path / "store"
    monkeypatch.setenv("NEURFLOW_STORE_DIR", str(data))
    monkeypatch.setenv("NEURFLOW_STORE_BOLT_PORT", str(free_port()))
    monkeypatch.setenv("NEURFLOW_STORE_HTTP_PORT", str(free_port()))
    monkeypatch.setenv("NEURFLOW_STORE_HEAP", "512m")
    try:
        assert main(["store", "status"]) == 1
        assert "running: False" in capsys.readouterr().out
        assert main(["store", "start"]) == 0
        assert "started" in capsys.readouterr().out
        assert main(["store", "start"]) == 0
        assert "already running" in capsys.readouterr().out
        cfg = running_config()
        assert cfg.password != store_server.password  # generated per store, never a default
        with Store(cfg) as s:
            s.run("CREATE (:Model {uid: 'persisted'})")
        assert main(["store", "status", "--json", "--counts"]) == 0
        assert json.loads(capsys.readouterr().out)["counts"]["Model"] == 1
        assert main(["store", "stop"]) == 0
        assert "store stopped" in capsys.readouterr().out
        assert main(["store", "stop"]) == 0
        assert "not running" in capsys.readouterr().out
        with pytest.raises(StoreUnavailable):
            running_config()
        # a new start finds the data again (same password file, same database)
        cfg2 = start_store()
        with Store(cfg2) as s:
            assert s.run("MATCH (m:Model) RETURN m.uid AS uid") == [{"uid": "persisted"}]
    finally:
        stop_embedded_server(data)


def test_second_server_on_a_locked_folder_fails_clearly(store_server):
    data = Path(store_server.data_dir)
    state = (data / "server.json").read_text()
    cmd = [sys.executable, "-m", "ingest.store.embedded", "serve", "--data-dir", str(data),
           "--bolt-port", str(free_port()), "--http-port", str(free_port()), "--heap", "256m"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    msg = (data / "server.error").read_text().strip()
    assert "locked by another process" in msg and "\n" not in msg
    assert (data / "server.json").read_text() == state  # the running server's lock is untouched
    assert embedded_status(data)["answering"]


@pytest.mark.parametrize("module,ours", [("ingest.store.embedded", True), ("ingest.embedded", True), ("other.module", False)])
def test_a_server_is_recognised_by_its_command_line_before_and_after_the_store_package(module, ours):
    """A server started by an install from before ingest/store/ existed runs `ingest.embedded serve`:
    it is still ours (so `neurflow store stop` stops it instead of a lock being cleared under it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", module, "serve"])
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 10  # between fork and exec the child still shows pytest's command line
        while b"time.sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _is_our_server(proc.pid) is ours
    finally:
        proc.kill()
        proc.wait()


def test_free_port_never_hands_out_a_port_twice():
    """A Bolt and an HTTP port taken one after the other must differ (the kernel may reuse a port
    it just released: a clean-clone run once got the same port for both)."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
