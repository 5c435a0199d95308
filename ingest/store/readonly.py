"""Read-only Cypher for the app's console and `neurflow query`: three independent layers, and a
time limit.

1. **Refusal before sending** (`check_readonly`).  The query is split into tokens the way the
   servers' lexers split it (comments, 'strings' with backslash escapes, `backticked` names,
   $parameters, numbers, words), then refused when it holds, outside a name position, a write
   or administration keyword of either dialect: Neo4j 5 Cypher (CREATE, MERGE, SET, DELETE,
   DETACH / NODETACH DELETE, REMOVE, FOREACH, LOAD CSV, CALL ... IN [CONCURRENT] TRANSACTIONS,
   GQL's INSERT, DROP, ALTER, GRANT, START/STOP DATABASE, TERMINATE, ...) and ArcadeDB's
   (the same, plus its transaction statements COMMIT, ROLLBACK, START TRANSACTION, which
   would end the rolled-back transaction of layer 3).  Procedure calls must name a procedure
   of a read-only allow-list and namespaced functions a read-only namespace; the name is read
   with its backticks and comments resolved (ArcadeDB resolves ``CALL `db.labels`()`` and
   ``CALL db . /*x*/ labels()`` to db.labels), so quoting cannot smuggle a name past the
   list.  A keyword in backticks where a clause would stand is refused too.  Names are not
   clauses: property keys, labels, map keys, parameters (``n.set``, ``:Create``,
   ``{delete: 1}``, ``$remove``) and strings (``'CREATE'``) pass.
2. **A read-only account** (`readonly_store`).  ArcadeDB does not enforce the driver's READ
   access mode, so on any server that is not Neo4j the console runs only with an account
   that has read rights only: the embedded store's ``neurflow_reader`` (its group has only
   ``readRecord``), or ``NEURFLOW_STORE_READONLY_USER`` for an external store.  Without one
   the console refuses to run (one line naming the fix), and an account that can create
   records is refused too (checked once, by a create in a rolled-back transaction).  Neo4j
   enforces READ access mode, so there the writer's account in a READ session is accepted.
3. **Always rolled back**: the query runs in an explicit transaction that is rolled back
   after the rows are read, so data writes that got past 1 and 2 do not persist.  (DDL is
   not transactional on ArcadeDB, which is why 1 and 2 come first.)

**Time limit.**  Neo4j enforces the transaction timeout sent with the query; ArcadeDB ignores
it and computes on after the client has gone, so the embedded server stops every statement
after ``NEURFLOW_STORE_QUERY_TIMEOUT`` seconds (``arcadedb.command.timeout``; an external
ArcadeDB needs that setting too).  On the client side each query runs on a driver of its own
that is closed when the answer is not back by the limit plus `CLIENT_GRACE_S`, so no caller
ever waits longer, whatever the server does.  Closing the connection does not stop the statement
on ArcadeDB (nothing does, short of its own limit), so a client limit shorter than the server's
(``NEURFLOW_STORE_QUERY_TIMEOUT`` changed after the embedded store started) ends with a message
that says the store computes on and for how long it may (`_client_cut`).
"""

from __future__ import annotations

import json
import pathlib
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import neo4j
from neo4j import exceptions as nx
from neo4j.graph import Node, Path, Relationship  # noqa: F401 - the driver's graph values, which the console draws

from ingest.queries import jobs as job_queries
from ingest.store.config import StoreConfig
from ingest.store.connection import Store, open_driver, start_store, translate_error
from ingest.store.embedded import query_timeout
from ingest.store.errors import SERVER_MESSAGE_LIMIT, ReadOnlyViolation, StoreError, StoreQueryError, one_line
from ingest.store.runner import Runner, to_plain  # noqa: F401 - to_plain: the console converts values with it

CLIENT_GRACE_S = 2.0  # how long past its limit a query may take to report the server's own timeout


class ReadOnlyAccountError(StoreError):
    """The store has no read-only account for the console, or the configured one can write."""


class QueryTimeout(StoreQueryError):
    """A console query ran past its time limit and was stopped."""


# --------------------------------------------------------------------------- layer 1: the check
# keywords that start (or are) a write, schema, administration or transaction statement
_WRITE_KEYWORDS = frozenset({
    "CREATE", "MERGE", "SET", "DELETE", "DETACH", "NODETACH", "REMOVE", "INSERT", "FOREACH", "LOAD",
    "DROP", "ALTER", "RENAME", "GRANT", "DENY", "REVOKE", "TERMINATE", "DEALLOCATE", "REALLOCATE", "DRYRUN",
    "COMMIT", "ROLLBACK", "BEGIN", "DEFINE",
})  # fmt: skip
# START / STOP / ENABLE are clauses only before these (a variable may be called `start`)
_ADMIN_OBJECTS = frozenset({"DATABASE", "DATABASES", "TRANSACTION", "TRANSACTIONS", "SERVER", "SERVERS"})

READ_PROCEDURES = frozenset(
    {
        "db.labels",
        "db.relationshiptypes",
        "db.propertykeys",
        "db.schema.visualization",
        "db.schema.nodetypeproperties",
        "db.schema.reltypeproperties",
        "db.indexes",
        "db.constraints",
        "db.info",
        "db.ping",
        "dbms.components",
        "dbms.procedures",
        "dbms.functions",
    }
)
# namespaced functions: built-in read-only namespaces of Neo4j and ArcadeDB; anything else
# (apoc.*, gds.*, a user-defined function library) could run code that writes
READ_FUNCTION_NAMESPACES = frozenset({
    "date", "datetime", "localdatetime", "localtime", "time", "duration", "point", "vector", "char", "character",
    "geo", "coll", "map", "text", "math", "convert", "node", "rel", "path", "agg", "temporal", "number",
})  # fmt: skip
READ_FUNCTIONS = frozenset({"db.namefromelementid"})

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>//[^\n\r]*|/\*.*?(?:\*/|\Z))
    | (?P<string>'(?:[^'\\]|\\.)*(?:'|\Z)|"(?:[^"\\]|\\.)*(?:"|\Z))
    | (?P<quoted>`(?:[^`]|``)*(?:`|\Z))
    | (?P<param>\$(?:[^\W\d]\w*|\d+|`(?:[^`]|``)*(?:`|\Z)))
    | (?P<number>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)
    | (?P<word>[^\W\d]\w*)
    | (?P<punct>.)
    """,
    re.S | re.X,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # word, quoted, string, param, number, punct
    text: str  # words as written; quoted names without their backticks
    start: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    def is_punct(self, ch: str) -> bool:
        return self.kind == "punct" and self.text == ch


def tokens(cypher: str) -> list[_Tok]:
    """The query's tokens without whitespace and comments (the servers' own lexical rules)."""
    out: list[_Tok] = []
    for m in _TOKEN.finditer(cypher):
        kind = m.lastgroup or "punct"
        if kind in ("ws", "comment"):
            continue
        text = m.group()
        if kind == "quoted":
            text = text[1:-1] if len(text) > 1 and text.endswith("`") else text[1:]
            text = text.replace("``", "`")
        out.append(_Tok(kind, text, m.start()))
    return out


def blank(cypher: str) -> str:
    """The query with comments removed and string literals / backticked names blanked.

    Lengths are kept (each blanked character becomes a space or a placeholder character), so
    positions in the result are positions in the query."""
    out = list(cypher)
    for m in _TOKEN.finditer(cypher):
        kind = m.lastgroup
        i, j = m.span()
        if kind == "comment":
            out[i:j] = [c if c in "\r\n" else " " for c in cypher[i:j]]
        elif kind in ("string", "quoted"):
            filler = "x" if kind == "quoted" else " "  # a backticked name stays a name, a string becomes nothing
            closed = j - i >= 2 and cypher[j - 1] == cypher[i]
            inner = j - i - (2 if closed else 1)
            out[i:j] = [cypher[i]] + [filler] * inner + ([cypher[j - 1]] if closed else [])
    return "".join(out)


def _line(cypher: str, pos: int) -> int:
    return cypher.count("\n", 0, pos) + 1


def _qualified_name(toks: list[_Tok], i: int) -> tuple[str, int]:
    """The dotted name starting at token `i` (words and backticked parts) and the index after it."""
    parts = [toks[i].text]
    j = i + 1
    while j + 1 < len(toks) and toks[j].is_punct(".") and toks[j + 1].kind in ("word", "quoted"):
        parts.append(toks[j + 1].text)
        j += 2
    return ".".join(parts), j


def _violation(toks: list[_Tok], i: int) -> str | None:
    """What is wrong with the word or backticked name `toks[i]` standing where a clause may stand."""
    tok = toks[i]
    prev = toks[i - 1] if i > 0 else None
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    nxt_word = nxt.upper if nxt is not None else ""
    if prev is not None and prev.upper == "AS":
        return None  # an alias (RETURN 1 AS `delete`, RETURN n.uid AS merge): after AS comes a name
    if tok.kind == "quoted":  # `CREATE`: a server may read it as the keyword; never as a write here
        word = (tok.text.split() or [""])[0].upper()
    else:
        word = tok.upper
    if word in _WRITE_KEYWORDS:
        two = {"DETACH": "DELETE", "NODETACH": "DELETE", "LOAD": "CSV"}.get(word)
        return f"{word} {two}" if two and nxt_word == two else word
    if word in ("START", "STOP", "ENABLE") and nxt_word in _ADMIN_OBJECTS:
        return f"{word} {nxt_word}"
    if word in ("TRANSACTIONS", "TRANSACTION") and not (prev is not None and prev.upper == "SHOW"):
        return "CALL { ... } IN TRANSACTIONS"
    if word == "CALL" and tok.kind == "quoted":
        return "CALL"
    return None


def check_readonly(cypher: str) -> None:
    """Raise `ReadOnlyViolation` when `cypher` holds a write / DDL / transaction clause, calls a
    procedure outside `READ_PROCEDURES` or a namespaced function outside the read namespaces."""
    if not cypher or not cypher.strip():
        raise ReadOnlyViolation("refused: the query is empty")
    toks = tokens(cypher)
    i = 0
    while i < len(toks):
        tok = toks[i]
        prev = toks[i - 1] if i > 0 else None
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok.kind not in ("word", "quoted") or (prev is not None and prev.is_punct(".")):
            i += 1  # not a word, or a property key (n.set)
            continue
        # a label or type (:Create) or a map key ({delete: 1}) is a name, not a clause
        named = (prev is not None and prev.is_punct(":")) or (nxt is not None and nxt.is_punct(":"))
        if not named:
            bad = _violation(toks, i)
            if bad:
                raise ReadOnlyViolation(
                    f"refused: this console is read-only and {bad} (line {_line(cypher, tok.start)}) would change the "
                    "store; load data with `neurflow ingest` instead"
                )
            if tok.upper == "CALL":
                if nxt is None or nxt.is_punct("{") or nxt.is_punct("("):
                    i += 1  # a subquery: its clauses are checked like the rest
                    continue
                if nxt.kind not in ("word", "quoted"):
                    raise ReadOnlyViolation(
                        f"refused: this console is read-only and CALL (line {_line(cypher, tok.start)}) must name a read procedure"
                    )
                proc, i = _qualified_name(toks, i + 1)
                if proc.lower() not in READ_PROCEDURES:
                    raise ReadOnlyViolation(
                        f"refused: this console is read-only and may only call read procedures "
                        f"({', '.join(sorted(READ_PROCEDURES))}); `{proc}` (line {_line(cypher, tok.start)}) is not one of them"
                    )
                continue
        # a namespaced function call: ns.fn(...), `ns`.`fn`(...), `ns.fn`(...) (also as a map value)
        name, j = _qualified_name(toks, i)
        if j < len(toks) and toks[j].is_punct("(") and "." in name:
            low = name.lower()
            if low not in READ_FUNCTIONS and low.split(".", 1)[0] not in READ_FUNCTION_NAMESPACES:
                raise ReadOnlyViolation(
                    f"refused: this console is read-only and may only call built-in read functions; `{name}` "
                    f"(line {_line(cypher, tok.start)}) is not one of them"
                )
        i = j


# --------------------------------------------------------------------------- layer 2: the account
_NEO4J_AGENT = re.compile(r"Neo4j/\d+(?:\.\d+)*(?:-[0-9A-Za-z.]+)?")


def enforces_read_access_mode(agent: str) -> bool:
    """True for Neo4j itself (``Neo4j/5.26.0``), which refuses writes in a READ session.

    Servers that speak Bolt in Neo4j's name say more (``Neo4j/5.26.0 compatible (ArcadeDB
    26.10.2)``, ``Neo4j/v5.11.0 compatible graph database server - Memgraph``) and are not
    trusted to enforce it: ArcadeDB does not."""
    return bool(_NEO4J_AGENT.fullmatch((agent or "").strip()))


def _can_create(store: Store) -> bool | None:
    """Whether the store's account may create a record: a create on an existing label, in a
    transaction that is rolled back whatever happens.  A create, because ArcadeDB checks it at
    once while updates and deletes are only checked at commit (a rolled-back SET proves
    nothing).  None when the database has no label to try (creating one would change the
    schema, which ArcadeDB does not roll back)."""
    with store.session() as session:
        runner = Runner(session)
        labels = [r["label"] for r in runner.auto(job_queries.Q_ANY_LABEL)]
        if not labels:
            return None
        try:
            runner.rolled_back(job_queries.create_probe(labels[0]), {"uid": f"neurflow-readonly-probe-{uuid.uuid4().hex}"},
                               timeout=30, record=True)
            return True
        except nx.Neo4jError as exc:
            msg = f"{exc.code or ''} {getattr(exc, 'message', '') or ''}"
            if "Forbidden" in msg or "not allowed" in msg or "AccessMode" in msg:
                return False
            return None


def verify_readonly_account(store: Store) -> None:
    """Raise `ReadOnlyAccountError` unless `store` (opened with the read-only account) cannot write."""
    cfg = store.config
    agent = store.server_agent
    if enforces_read_access_mode(agent):
        return  # Neo4j refuses writes in the console's READ sessions, whatever the account
    if not cfg.readonly_user:
        raise ReadOnlyAccountError(
            f"the read-only console needs an account with read rights only on {cfg.uri} ({agent}), which does not "
            "enforce read-only sessions: set NEURFLOW_STORE_READONLY_USER and NEURFLOW_STORE_READONLY_PASSWORD to such an account"
        )
    try:
        writable = _can_create(store)
    except nx.Neo4jError:
        writable = None  # the check itself failed (no db.labels, ...): layers 1 and 3 still hold
    except Exception as exc:
        raise translate_error(exc, cfg, user=cfg.readonly_user, readonly=True) from None
    if writable:
        fix = ("restart the embedded store (`neurflow store stop`, `neurflow store start`) to restore its reader account"
               if cfg.embedded else
               "set NEURFLOW_STORE_READONLY_USER / NEURFLOW_STORE_READONLY_PASSWORD to an account with read rights only")
        raise ReadOnlyAccountError(f"the read-only console's account {cfg.readonly_user!r} can write to {cfg.uri}: {fix}")


_stores: dict[tuple, Store] = {}
_lock = threading.Lock()


def readonly_store(cfg: StoreConfig | None = None) -> Store:
    """A cached `Store` logged in with the read-only account of `cfg` (default: environment),
    checked by `verify_readonly_account` when first opened."""
    cfg = cfg or start_store()
    key = (cfg.uri, cfg.readonly_user or cfg.user, cfg.database)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = Store(cfg, readonly=True)
            try:
                verify_readonly_account(store)
            except BaseException:
                store.close()
                raise
            _stores[key] = store
        return store


def close_readonly_stores() -> None:
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()


# --------------------------------------------------------------------------- running
def default_timeout() -> float:
    """``NEURFLOW_STORE_QUERY_TIMEOUT`` seconds (60 by default): the embedded server's own limit."""
    return query_timeout()


def run_readonly(
    cypher: str,
    params: dict[str, Any] | None = None,
    *,
    config: StoreConfig | None = None,
    store: Store | None = None,
    max_rows: int | None = 10000,
    timeout: float | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Run user Cypher read-only; return (columns, rows).  Refusals raise `ReadOnlyViolation`,
    a missing or writable read-only account `ReadOnlyAccountError`, the time limit `QueryTimeout`.

    `store`: an already open Store (tests); by default the read-only account of `config`.
    `max_rows`: stop reading after that many rows (the transaction is rolled back anyway).
    `timeout`: seconds (default `default_timeout()`)."""
    check_readonly(cypher)  # layer 1
    st = store or readonly_store(config)  # layer 2: the read-only account
    return execute_rolled_back(st, cypher, params, max_rows=max_rows, timeout=timeout)


def server_time_limit(cfg: StoreConfig) -> float | None:
    """Seconds the embedded server lets a statement run (``arcadedb.command.timeout``, fixed when it
    started: its ``server.json``); None for another store or when it cannot be read."""
    if not cfg.embedded or not cfg.data_dir:
        return None
    try:
        return float(json.loads((pathlib.Path(cfg.data_dir) / "server.json").read_text())["query_timeout_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _timeout_error(limit: float, server_message: str | None = None, *, still_running: str | None = None) -> QueryTimeout:
    """The client's limit, or the store's own (which may be shorter) when the store said so.

    `still_running`: the client gave up but the server goes on computing (it does not take the
    client's limit), said as how long it may."""
    if server_message:
        what = f"the store's time limit and the store stopped it ({server_message})"
    elif still_running:
        what = f"its time limit of {limit:g} s; this client stopped waiting, but {still_running}"
    else:
        what = f"its time limit of {limit:g} s and was stopped"
    return QueryTimeout(
        f"the query ran past {what}; narrow it (a LIMIT, a smaller range, a more selective MATCH) "
        "or raise NEURFLOW_STORE_QUERY_TIMEOUT"
    )


def _client_cut(st: Store, limit: float, elapsed: float) -> QueryTimeout:
    """The error of a query the client stopped waiting for, saying truthfully whether the server
    stopped it too.  Neo4j takes the transaction timeout sent with the query and stops it; the
    Bolt plugin of ArcadeDB ignores it (no cancel either: closing the connection leaves the
    statement running), so there the statement runs until the server's own limit."""
    cfg = st.config
    if enforces_read_access_mode(getattr(st, "_agent", None) or ""):  # Neo4j itself
        return _timeout_error(limit)
    server = server_time_limit(cfg)
    if server is None:
        return _timeout_error(limit, still_running=(
            "the store may still be computing it up to its own time limit (on ArcadeDB: arcadedb.command.timeout)"))
    left = server - elapsed
    if left <= 0:
        return _timeout_error(limit)
    return _timeout_error(limit, still_running=(
        f"the embedded store computes it on for up to {left:.0f} s more (its own limit is {server:g} s, "
        "NEURFLOW_STORE_QUERY_TIMEOUT as it was when the store started; restart it with `neurflow store stop` and "
        "`neurflow store start` to apply the current one)"))


def execute_rolled_back(
    st: Store,
    cypher: str,
    params: dict[str, Any] | None = None,
    *,
    max_rows: int | None = 10000,
    timeout: float | None = None,
    on_values: Callable[[list[Any]], None] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Layer 3 alone: run `cypher` in a READ-mode explicit transaction that is always rolled back,
    within `timeout` seconds (default `default_timeout()`).

    The query runs on a driver of its own (same account as `st`) in a worker thread; when the
    answer is not complete `CLIENT_GRACE_S` after the limit, that driver is closed, which cuts
    the connection and frees the caller at once (`QueryTimeout`).  The server's own limit
    (Neo4j: the transaction timeout sent here; ArcadeDB: ``arcadedb.command.timeout``) normally
    answers first.  `on_values` sees each record's raw driver values (nodes, relationships)
    before they are turned into plain values: the app's console collects the graph it draws
    that way (it is called on the worker thread)."""
    cfg = st.config
    limit = float(timeout) if timeout else default_timeout()
    outcome: dict[str, Any] = {}
    try:
        driver = open_driver(cfg, readonly=getattr(st, "readonly", False), verify=False)
    except StoreError:
        raise
    except Exception as exc:
        raise translate_error(exc, cfg, readonly=getattr(st, "readonly", False)) from None

    def work() -> None:
        try:
            with driver.session(database=st.database, default_access_mode=neo4j.READ_ACCESS) as session:
                outcome["result"] = Runner(session).rolled_back(
                    cypher, params, timeout=limit, max_rows=max_rows, on_values=on_values)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="neurflow-readonly-query", daemon=True)
    t0 = time.monotonic()
    try:
        worker.start()
        worker.join(limit + CLIENT_GRACE_S)
    finally:
        if worker.is_alive():  # past the limit, or the caller was interrupted: cut the connection
            driver.close()
            worker.join(5.0)
    driver.close()
    if "result" in outcome:
        return outcome["result"]
    exc = outcome.get("error")
    elapsed = time.monotonic() - t0
    if exc is None or elapsed >= limit + CLIENT_GRACE_S:
        raise _client_cut(st, limit, elapsed)
    raise _translated(exc, cfg, limit, readonly=getattr(st, "readonly", False))


def _translated(exc: BaseException, cfg: StoreConfig, limit: float, *, readonly: bool = False) -> BaseException:
    """The one-line typed error for a failure of the query `execute_rolled_back` ran."""
    if isinstance(exc, StoreError) or not isinstance(exc, Exception):
        return exc  # ours already, or KeyboardInterrupt and the like
    if isinstance(exc, nx.Neo4jError):
        code = exc.code or ""
        msg = one_line(getattr(exc, "message", None) or exc, SERVER_MESSAGE_LIMIT)
        if "TimedOut" in code or "Timeout" in code or "exceeded the arcadedb.command.timeout" in msg:
            return _timeout_error(limit, msg)
        if "Forbidden" in code or "AccessMode" in code or "not allowed" in msg:
            return ReadOnlyViolation(f"refused by the store (read-only account): {msg}")
        if isinstance(exc, nx.AuthError) or "Database" in code:
            return translate_error(exc, cfg, readonly=readonly)
        return StoreQueryError(f"the query failed: {msg}")
    return translate_error(exc, cfg, readonly=readonly)
