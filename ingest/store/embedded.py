"""The embedded store: ArcadeDB's server (PyPI ``arcadedb-embedded``) with its Bolt plugin,
run as a detached background process that every NeurFlow process shares.

Layout of the data folder (default ``~/.local/share/neurflow/store``, ``NEURFLOW_STORE_DIR``)::

    server.json        pid and ports of the running server (written once it is ready)
    server.error       one-line reason of the last failed start
    secrets/           root.password, reader.password (0600; generated on first start)
    databases/ config/ backups/   ArcadeDB's own folders
    log/               ArcadeDB's logs (the server process runs with this folder as CWD)

``ensure_embedded_server()`` reuses a running server or starts one
(``python -m ingest.store.embedded serve ...``, new session, so it outlives the caller);
``stop_embedded_server()`` stops it; ``embedded_status()`` reports on it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from ingest.store.config import (
    DEFAULT_DATABASE,
    EMBEDDED_HOST,
    READER_USER,
    ROOT_USER,
    StoreConfig,
    embedded_ports,
    store_dir,
)
from ingest.store.errors import SERVER_MESSAGE_LIMIT, PortInUse, StoreError, StoreStartError, StoreUnavailable, one_line

STATE_FILE = "server.json"
ERROR_FILE = "server.error"
READER_GROUP = "neurflow_reader"
DEFAULT_QUERY_TIMEOUT_S = 60.0
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def query_timeout(env: Mapping[str, str] | None = None) -> float:
    """Seconds one statement may run: ``NEURFLOW_STORE_QUERY_TIMEOUT`` (default 60).

    The embedded server enforces it on every statement (``arcadedb.command.timeout``), because
    ArcadeDB ignores the driver's transaction timeout and keeps computing after a client has
    gone; the read-only console waits that long for an answer on any store."""
    env = os.environ if env is None else env
    raw = (env.get("NEURFLOW_STORE_QUERY_TIMEOUT") or "").strip()
    if not raw:
        return DEFAULT_QUERY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise StoreError(f"NEURFLOW_STORE_QUERY_TIMEOUT={raw!r} is not a number of seconds; set it to a positive number such as 60")
    return value


# --------------------------------------------------------------------------- files
def _secret(data_dir: Path, name: str, *, create: bool) -> str | None:
    """Read (or create with 0600 permissions) a generated password of the data folder."""
    folder = data_dir / "secrets"
    path = folder / f"{name}.password"
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return None
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


SERVER_MODULES = (b"ingest.store.embedded", b"ingest.embedded")


def _is_our_server(pid: int) -> bool:
    """True when `pid` is alive and runs `ingest.store.embedded serve` (guards against pid reuse),
    or `ingest.embedded serve`: the module's name before ingest/ had sub-packages, so a server
    started by an older install is still found (and `neurflow store stop` stops it)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return any(m in cmdline for m in SERVER_MODULES) and b"serve" in cmdline


def _port_open(port: int, host: str = EMBEDDED_HOST, timeout: float = 0.5) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def _check_port_free(port: int, env_name: str) -> None:
    """Refuse a port another program listens on.  SO_REUSEADDR, as the server itself binds, so
    connections of a just-stopped server lingering in TIME_WAIT do not count as "in use"."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((EMBEDDED_HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"port {port} on {EMBEDDED_HOST} is in use by another program; stop it or set {env_name} to a free port"
                ) from None
            raise


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for tests and benchmarks), never one this process
    was handed before: the kernel may give the port it just released again, so two calls in a row
    (a Bolt and an HTTP port) could otherwise name the same port."""
    while True:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind((EMBEDDED_HOST, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@contextlib.contextmanager
def _folder_errors(folder: Path):
    """An OS error on a file of the store folder (read-only folder, a file where a folder should
    be, no permission) becomes one `StoreStartError` line that names the folder and the variable."""
    try:
        yield
    except OSError as exc:
        name = str(exc.filename or "")
        if not name or not (name == str(folder) or name.startswith(str(folder) + os.sep)):
            raise
        raise StoreStartError(
            f"cannot use the store folder {folder}: {exc.strerror or type(exc).__name__} ({name}); "
            "set NEURFLOW_STORE_DIR to a folder you can write, or fix the folder's permissions"
        ) from None


@contextlib.contextmanager
def _start_lock(data_dir: Path):
    """Serialise concurrent starts of the same data folder (released by the OS if we die)."""
    with open(data_dir / "start.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- client side
def _config_from_state(data_dir: Path, state: dict[str, Any]) -> StoreConfig:
    return StoreConfig(
        uri=f"bolt://{state.get('host', EMBEDDED_HOST)}:{state['bolt_port']}",
        user=ROOT_USER,
        password=_secret(data_dir, "root", create=False),
        database=state.get("database", DEFAULT_DATABASE),
        readonly_user=READER_USER,
        readonly_password=_secret(data_dir, "reader", create=False),
        embedded=True,
        data_dir=str(data_dir),
        http_port=int(state["http_port"]),
    )


def _running_state(data_dir: Path, *, announce_stale: bool = True) -> dict[str, Any] | None:
    """State of a live server of this folder, or None (a stale state file is removed)."""
    state = _read_state(data_dir)
    if state is None:
        return None
    pid = int(state.get("pid", -1))
    if pid > 0 and _is_our_server(pid):
        return state
    if announce_stale:
        print(
            f"neurflow store: removed the stale lock {data_dir / STATE_FILE} of a server that is gone (pid {pid})",
            file=sys.stderr,
        )
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return None


def embedded_config(data_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> StoreConfig:
    """Configuration of the running embedded server; `StoreUnavailable` when none runs."""
    folder = Path(data_dir).expanduser().resolve() if data_dir else store_dir(env)
    with _folder_errors(folder):
        state = _running_state(folder) if folder.is_dir() else None
    if state is None:
        raise StoreUnavailable(f"the embedded store is not running (data folder {folder}); start it with `neurflow store start`")
    with _folder_errors(folder):
        return _config_from_state(folder, state)


START_TIMEOUT_S = 120.0  # how long a new server may take to answer on its Bolt port before the start is given up


def ensure_embedded_server(
    data_dir: str | Path | None = None,
    *,
    bolt_port: int | None = None,
    http_port: int | None = None,
    database: str = DEFAULT_DATABASE,
    env: Mapping[str, str] | None = None,
    heap: str | None = None,
    owner_pid: int | None = None,
    query_timeout_s: float | None = None,
) -> StoreConfig:
    """Reuse the embedded server of `data_dir` if it runs, else start it; return its config.

    `owner_pid`: the server stops by itself once that process is gone (tests use it so that
    no server outlives a crashed test session).  `query_timeout_s`: the server stops any
    statement that runs longer (default `query_timeout()`; a running server keeps its own)."""
    env = os.environ if env is None else env
    folder = Path(data_dir).expanduser().resolve() if data_dir else store_dir(env)
    env_bolt, env_http = embedded_ports(env)
    bolt_port = bolt_port or env_bolt
    http_port = http_port or env_http
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreStartError(
            f"cannot create the store folder {folder}: {exc.strerror or type(exc).__name__}; "
            "set NEURFLOW_STORE_DIR to a folder you can write"
        ) from None
    with _folder_errors(folder), _start_lock(folder):
        state = _running_state(folder)
        if state is not None:
            if _port_open(int(state["bolt_port"])):
                return _config_from_state(folder, state)
            raise StoreStartError(
                f"the embedded server (pid {state['pid']}) runs but does not answer on port {state['bolt_port']}; "
                "stop it with `neurflow store stop` and start it again"
            )
        if bolt_port == http_port:
            raise StoreStartError(f"the Bolt and HTTP ports are both {bolt_port}; set NEURFLOW_STORE_HTTP_PORT to another port")
        _check_port_free(bolt_port, "NEURFLOW_STORE_BOLT_PORT")
        _check_port_free(http_port, "NEURFLOW_STORE_HTTP_PORT")
        _secret(folder, "root", create=not (folder / "config" / "server-users.jsonl").exists())
        if _secret(folder, "root", create=False) is None:
            raise StoreStartError(
                f"the root password file {folder / 'secrets' / 'root.password'} is missing but the store has users; "
                "restore the file or move the store folder away"
            )
        _secret(folder, "reader", create=True)
        with contextlib.suppress(FileNotFoundError):
            (folder / ERROR_FILE).unlink()
        (folder / "log").mkdir(exist_ok=True)
        cmd = [
            sys.executable, "-m", "ingest.store.embedded", "serve",
            "--data-dir", str(folder), "--bolt-port", str(bolt_port), "--http-port", str(http_port),
            "--database", database, "--heap", heap or env.get("NEURFLOW_STORE_HEAP", "2g"),
        ]  # fmt: skip
        if owner_pid:
            cmd += ["--owner-pid", str(owner_pid)]
        cmd += ["--query-timeout", f"{query_timeout_s or query_timeout(env):g}"]
        child_env = dict(env)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")] if p)
        with open(folder / "log" / "server.out", "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=folder, env=child_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                reason = _last_error(folder) or f"the server process exited with status {code}; see {folder / 'log' / 'server.out'}"
                raise StoreStartError(f"the embedded store did not start: {reason}")
            state = _read_state(folder)
            if state and int(state.get("pid", -1)) == proc.pid and _port_open(bolt_port):
                return _config_from_state(folder, state)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise StoreStartError(f"the embedded store did not become ready in {START_TIMEOUT_S:.0f} s; see {folder / 'log' / 'server.out'}")


def _last_error(folder: Path) -> str | None:
    try:
        return one_line((folder / ERROR_FILE).read_text(), SERVER_MESSAGE_LIMIT)
    except FileNotFoundError:
        return None


def stop_embedded_server(data_dir: str | Path | None = None, *, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Stop the embedded server of `data_dir`; False when none was running."""
    folder = Path(data_dir).expanduser().resolve() if data_dir else store_dir(env)
    if not folder.is_dir():
        return False
    with _folder_errors(folder):
        state = _running_state(folder)
    if state is None:
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError):
        if int((_read_state(folder) or {}).get("pid", -1)) == pid:
            (folder / STATE_FILE).unlink()
    return True


def embedded_status(data_dir: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `neurflow store status` shows."""
    folder = Path(data_dir).expanduser().resolve() if data_dir else store_dir(env)
    with _folder_errors(folder):
        state = _running_state(folder) if folder.is_dir() else None
    out: dict[str, Any] = {"running": state is not None, "data_dir": str(folder)}
    if state:
        out.update(
            pid=state["pid"],
            uri=f"bolt://{state.get('host', EMBEDDED_HOST)}:{state['bolt_port']}",
            http_port=state["http_port"],
            database=state.get("database"),
            started_at=state.get("started_at"),
            arcadedb=state.get("arcadedb"),
            answering=_port_open(int(state["bolt_port"])),
        )
    return out


# ------------------------------------------------------------------ database admin (HTTP)
def _http(cfg: StoreConfig, method: str, path: str, payload: dict | None = None) -> dict:
    if not cfg.embedded or not cfg.http_port:
        raise StoreError("database administration is only available on the embedded store")
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(f"http://{EMBEDDED_HOST}:{cfg.http_port}{path}", data=data, method=method)
    token = base64.b64encode(f"{cfg.user}:{cfg.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(Exception):
            detail = json.loads(detail).get("detail") or json.loads(detail).get("error") or detail
        raise StoreError(f"the embedded store refused {path}: {one_line(detail, SERVER_MESSAGE_LIMIT)}") from None
    except urllib.error.URLError as exc:
        raise StoreUnavailable(f"cannot reach the embedded store's HTTP port {cfg.http_port} ({exc.reason}); is it running? `neurflow store status`") from None
    return json.loads(body) if body else {}


def server_command(cfg: StoreConfig, command: str) -> dict:
    return _http(cfg, "POST", "/api/v1/server", {"command": command})


def list_databases(cfg: StoreConfig) -> list[str]:
    return list(_http(cfg, "GET", "/api/v1/databases").get("result", []))


def create_database(cfg: StoreConfig, name: str) -> None:
    if name not in list_databases(cfg):
        server_command(cfg, f"create database {name}")


def drop_database(cfg: StoreConfig, name: str) -> None:
    if name in list_databases(cfg):
        server_command(cfg, f"drop database {name}")


# --------------------------------------------------------------------------- server side
def _ensure_reader(java_server: Any, password: str) -> None:
    """A server user whose only right, on every database, is reading records."""
    import jpype

    JSONObject = jpype.JClass("com.arcadedb.serializer.json.JSONObject")
    security = java_server.getSecurity()
    group = {"resultSetLimit": -1, "readTimeout": -1, "access": [], "types": {"*": {"access": ["readRecord"]}}}
    security.saveGroup("*", READER_GROUP, JSONObject(json.dumps(group)))
    if security.existsUser(READER_USER):
        security.dropUser(READER_USER)
    user = {"name": READER_USER, "password": str(security.encodePassword(password)), "databases": {"*": [READER_GROUP]}}
    security.createUser(JSONObject(json.dumps(user)))


def serve(args: argparse.Namespace) -> int:
    folder = Path(args.data_dir).resolve()
    os.chdir(folder)  # ArcadeDB writes ./log relative to the working directory
    (folder / "log").mkdir(exist_ok=True)
    os.environ["ARCADEDB_JVM_ERROR_FILE"] = str(folder / "log" / "hs_err_pid%p.log")
    stop = {"flag": False}

    def _on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    server = None
    started = False
    try:
        root_pw = _secret(folder, "root", create=False)
        reader_pw = _secret(folder, "reader", create=False)
        if not root_pw or not reader_pw:
            raise StoreStartError(f"missing password files in {folder / 'secrets'}; start the store with `neurflow store start`")
        import arcadedb_embedded
        from arcadedb_embedded.server import ArcadeDBServer

        t0 = time.monotonic()
        server = ArcadeDBServer(
            str(folder),
            root_pw,
            {
                "host": EMBEDDED_HOST,
                "http_port": args.http_port,
                "server_httpsIncomingPort": str(args.http_port + 1),
                "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
                "bolt_port": args.bolt_port,
                "bolt_host": EMBEDDED_HOST,
                "server_logsDirectory": str(folder / "log"),
            },
            # -Xrs: the JVM leaves SIGTERM/SIGINT to Python, so a stop closes the databases cleanly
            # arcadedb.command.timeout (ms): every statement of every user and database stops after
            # this long; ArcadeDB ignores the Bolt transaction timeout and would go on computing
            # after the client has left.  A JVM property, because the server's own configuration
            # does not reach the databases (measured: no timeout when set there)
            jvm_kwargs={"heap_size": args.heap,
                        "jvm_args": ["-Xrs", f"-Darcadedb.command.timeout={max(1, int(args.query_timeout * 1000))}"]},
        )
        server.start()
        started = True
        java = server._java_server
        if not java.existsDatabase(args.database):
            server.create_database(args.database)
        _ensure_reader(java, reader_pw)
        _write_json_atomic(
            folder / STATE_FILE,
            {
                "pid": os.getpid(),
                "host": EMBEDDED_HOST,
                "bolt_port": args.bolt_port,
                "http_port": args.http_port,
                "database": args.database,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "start_seconds": round(time.monotonic() - t0, 2),
                "arcadedb": arcadedb_embedded.__version__,
                "query_timeout_s": args.query_timeout,
            },
        )
        print(f"neurflow store: ready on bolt://{EMBEDDED_HOST}:{args.bolt_port} in {time.monotonic() - t0:.1f} s", flush=True)
        while not stop["flag"]:
            if args.owner_pid and not _pid_alive(args.owner_pid):
                print(f"neurflow store: owner process {args.owner_pid} is gone, stopping", flush=True)
                break
            time.sleep(0.25)
        return 0
    except BaseException as exc:  # noqa: BLE001 - the reason goes to server.error for the client
        msg = one_line(exc, SERVER_MESSAGE_LIMIT)
        if "Address already in use" in msg or "BindException" in msg:
            msg = f"a port is in use by another program ({msg}); set NEURFLOW_STORE_BOLT_PORT / NEURFLOW_STORE_HTTP_PORT"
        elif "lock" in msg.lower():
            msg = f"the store folder {folder} is locked by another process ({msg}); stop it first"
        (folder / ERROR_FILE).write_text(msg + "\n")
        print(f"neurflow store: start failed: {msg}", file=sys.stderr, flush=True)
        return 1
    finally:
        with contextlib.suppress(Exception):
            if int((_read_state(folder) or {}).get("pid", -1)) == os.getpid():
                (folder / STATE_FILE).unlink()
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
            if started:
                print("neurflow store: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.store.embedded")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the embedded server in the foreground (normally started detached)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--bolt-port", type=int, required=True)
    s.add_argument("--http-port", type=int, required=True)
    s.add_argument("--database", default=DEFAULT_DATABASE)
    s.add_argument("--heap", default="2g")
    s.add_argument("--owner-pid", type=int, default=None)
    s.add_argument("--query-timeout", type=float, default=DEFAULT_QUERY_TIMEOUT_S, help="seconds a statement may run")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # the server is stopped and its databases closed; a client connection still open would keep
    # a non-daemon Bolt thread, and so the JVM and this process, alive at a normal exit
    os._exit(code)
