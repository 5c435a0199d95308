"""The three read-only layers, each on its own, against the real embedded server; the account
requirement for external stores; the time limit; and `neurflow query`."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ingest.store.config import StoreConfig
from ingest.store.errors import ReadOnlyViolation, StoreError
from ingest.store.readonly import (
    QueryTimeout,
    ReadOnlyAccountError,
    blank,
    check_readonly,
    close_readonly_stores,
    enforces_read_access_mode,
    execute_rolled_back,
    readonly_store,
    run_readonly,
)
from ingest.store.connection import Store
from cli.main import main
from cli.store_commands import format_table, parse_params

# --------------------------------------------------------------------------- layer 1: the parser
REFUSED = [
    "CREATE (n:Neuron {uid: 'x'})",
    "create (n)",
    "MATCH (n) MERGE (n)-[:R]->(m)",
    "MATCH (n) SET n.label = 'x'",
    "MATCH (n)\nset n:Extra",
    "MATCH (n) DELETE n",
    "MATCH (n) DETACH DELETE n",
    "MATCH (n) REMOVE n.label",
    "DROP CONSTRAINT neuron_uid",
    "DROP INDEX concept_circuit IF EXISTS",
    "CREATE INDEX foo IF NOT EXISTS FOR (n:Neuron) ON (n.channel)",
    "CREATE CONSTRAINT c IF NOT EXISTS FOR (n:X) REQUIRE n.uid IS UNIQUE",
    "LOAD CSV FROM 'file:///x.csv' AS row RETURN row",
    "load   csv with headers from 'x' as r return r",
    "MATCH (n) CALL { WITH n RETURN n AS m } IN TRANSACTIONS RETURN m",
    "MATCH (n) FOREACH (x IN [1] | SET n.y = x)",
    "MATCH (n) RETURN n /* comment */ ; CREATE (m)",
    "MATCH (n) // a comment\nDELETE n",
    "MATCH (n) WHERE n.name = 'it''s' DELETE n",
    "MATCH (n) WHERE n.name = \"a \\\" quote\" SET n.x = 1",
    "CALL apoc.create.node(['X'], {})",
    "call db.createLabel('X')",
    "ALTER DATABASE neo4j SET ACCESS READ ONLY",
    "GRANT ROLE reader TO bob",
    "STOP DATABASE neo4j",
    # GQL / Neo4j 5 forms the first check missed
    "INSERT (p:X {a: 1})",
    "MATCH (n) NODETACH DELETE n",
    "MATCH (n) CALL { WITH n RETURN n AS m } IN CONCURRENT TRANSACTIONS RETURN m",
    "MATCH (n) CALL (n) { SET n.q = 1 } RETURN n",
    "OPTIONAL CALL apoc.create.node(['X'], {})",
    "TERMINATE TRANSACTIONS 'neo4j-transaction-1'",
    "ENABLE SERVER 'abc'",
    # ArcadeDB's transaction statements would end the always-rolled-back transaction
    "COMMIT",
    "START TRANSACTION",
    "ROLLBACK",
    # quoted and spaced names resolve to the procedure (ArcadeDB resolves `db.labels` and db . labels)
    "CALL `apoc`.`create`.node(['X'], {})",
    "CALL `apoc.create.node`(['X'], {})",
    "CALL db . /* x */ createLabel('X')",
    "CALL `db`.`createLabel`('X')",
    "CALL\u00a0apoc.create.node(['X'], {})",
    "CALL $proc",
    # backticked clause keywords where a clause stands
    "`CREATE` (n:X)",
    "MATCH (n) `SET` n.x = 1",
    "`CALL` apoc.create.node(['X'], {})",
    # lexical edges: a number glued to the keyword, Unicode line separator, a map value
    "MATCH (n) WITH n LIMIT 1DELETE n",
    "MATCH (n)\u2028SET n.x = 1",
    "RETURN {a: apoc.cypher.runFirstColumnSingle('CREATE (n) RETURN n', {})} AS m",
    "RETURN `apoc.cypher.runFirstColumn`('MATCH (n) DETACH DELETE n', {}) AS x",
    "RETURN mylib.writeSomething(1) AS x",
]

ALLOWED = [
    "MATCH (n) RETURN n LIMIT 5",
    "MATCH (n) WHERE n.name = 'CREATE' RETURN n",
    "MATCH (n) WHERE n.label CONTAINS \"merge; delete\" RETURN n",
    "MATCH (n) // CREATE (m)\nRETURN n",
    "MATCH (n) /* DETACH DELETE n */ RETURN n",
    "MATCH (n:`CREATE`) RETURN n",
    "MATCH (n) RETURN n.set AS s, n.delete, n.remove",
    "MATCH (:Neuron)-[:SET]->(m) RETURN m",
    "RETURN {create: 1, merge: 2, `set`: 3} AS m",
    "MATCH (n) WHERE n.x = $delete RETURN n",
    "MATCH (n) WITH n ORDER BY n.uid RETURN collect(n.uid) AS created",
    "MATCH (n) RETURN n.uid AS createdAt, n.settings AS dataset",
    "CALL db.labels()",
    "call db.relationshipTypes() YIELD relationshipType RETURN relationshipType",
    "MATCH (n) CALL { WITH n RETURN count(*) AS c } RETURN c",
    "SHOW INDEXES",
    "MATCH p = shortestPath((a:Neuron)-[:FEEDS*..5]->(b:Neuron)) RETURN p",
    "CALL `db.labels`()",
    "CALL `db`.`labels`() YIELD label RETURN label",
    "CALL db . labels()",
    "OPTIONAL CALL db.labels()",
    "SHOW TRANSACTIONS",
    "MATCH p = (start)-->(stop) RETURN start, stop",
    "RETURN 1 AS `delete`",
    "MATCH (n) RETURN n {.set, .create}",
    "RETURN 'it\\'s a DELETE' AS x",
    "RETURN date.truncate('day', date()) AS d, duration.between(date(), date()) AS z",
    "RETURN coll.sum([1, 2]) AS s, db.nameFromElementId('x') AS d",
    "RETURN {call: 1, `commit`: 2} AS m, $`delete` AS p",
    "MATCH (a)-[:FEEDS*1..5]->(b) RETURN count(b) AS n, 0x1F AS h, .5 AS f",
]


@pytest.mark.parametrize("cypher", REFUSED)
def test_parser_refuses_writes(cypher):
    with pytest.raises(ReadOnlyViolation) as err:
        check_readonly(cypher)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("refused:")


@pytest.mark.parametrize("cypher", ALLOWED)
def test_parser_allows_reads(cypher):
    check_readonly(cypher)


def test_parser_names_the_clause_and_line():
    with pytest.raises(ReadOnlyViolation, match=r"DELETE \(line 3\)"):
        check_readonly("MATCH (n)\nWITH n\nDELETE n")
    with pytest.raises(ReadOnlyViolation, match="empty"):
        check_readonly("   ")


def test_blank_keeps_positions():
    q = "MATCH (n) WHERE n.name = 'CREATE' // MERGE\nRETURN n /* SET */"
    b = blank(q)
    assert len(b) == len(q) and "CREATE" not in b and "MERGE" not in b and "SET" not in b
    assert b.index("RETURN") == q.index("RETURN")


# --------------------------------------------------------------------------- layer 2: the reader account
def _seed(store: Store) -> None:
    store.run("CREATE (:Model {uid: 'm', name: 'before'})")


WRITES = [
    "CREATE (:Model {uid: 'new'})",
    "CREATE (:Brandnew {uid: 'x'})",
    "MATCH (m:Model) SET m.name = 'after'",
    "MATCH (m:Model) DETACH DELETE m",
    "CREATE INDEX sneaky IF NOT EXISTS FOR (n:Model) ON (n.name)",
    "CREATE CONSTRAINT sneaky IF NOT EXISTS FOR (n:Layer) REQUIRE n.uid IS UNIQUE",
    "DROP CONSTRAINT model_uid",
]


@pytest.mark.parametrize("write", WRITES)
def test_reader_account_cannot_write(store, write):
    _seed(store)
    before_idx = store.run("SHOW INDEXES")
    ro = Store(store.config, readonly=True)
    try:
        assert ro.config.readonly_user == "neurflow_reader"
        with pytest.raises(Exception):  # noqa: B017 - the server refuses (Forbidden or semantic error)
            with ro.session() as session:  # auto-commit, no parser, no rollback: the account alone
                session.run(write).consume()
    finally:
        ro.close()
    assert store.run("MATCH (n) RETURN n.uid AS uid, n.name AS name") == [{"uid": "m", "name": "before"}]
    assert store.run("SHOW INDEXES") == before_idx


def test_reader_account_can_read(store):
    _seed(store)
    ro = Store(store.config, readonly=True)
    try:
        assert ro.run("MATCH (m:Model) RETURN m.name AS name") == [{"name": "before"}]
    finally:
        ro.close()


# --------------------------------------------------------------------------- layer 3: the rollback
def test_writes_in_the_rolled_back_transaction_do_not_persist(store):
    _seed(store)
    # the writer account, no parser: only the rollback stands between the query and the data
    cols, rows = execute_rolled_back(store, "MATCH (m:Model) SET m.name = 'after' CREATE (x:Model {uid: 'x'}) RETURN m.name AS name")
    assert cols == ["name"] and rows == [["after"]]  # the transaction saw its own write ...
    assert store.run("MATCH (n) RETURN n.uid AS uid, n.name AS name") == [{"uid": "m", "name": "before"}]  # ... gone


# --------------------------------------------------------------------------- the three together
def test_run_readonly_returns_columns_and_rows(store):
    _seed(store)
    cols, rows = run_readonly("MATCH (m:Model) WHERE m.uid = $u RETURN m.uid AS uid, m AS node", {"u": "m"}, config=store.config)
    assert cols == ["uid", "node"]
    assert rows == [["m", {"labels": ["Model"], "uid": "m", "name": "before"}]]
    cols, rows = run_readonly("UNWIND range(1, 50) AS i RETURN i", config=store.config, max_rows=7)
    assert len(rows) == 7


def test_run_readonly_refuses_before_sending(store):
    with pytest.raises(ReadOnlyViolation, match="CREATE"):
        run_readonly("CREATE (:Model {uid: 'z'})", config=store.config)
    assert store.run("MATCH (n) RETURN count(n) AS n") == [{"n": 0}]


def test_run_readonly_reports_bad_cypher_in_one_line(store):
    from ingest.store.errors import StoreQueryError

    with pytest.raises(StoreQueryError) as err:
        run_readonly("MATCH (n RETURN n", config=store.config)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- neurflow query
def test_parse_params():
    assert parse_params(["a=1", "b=x y", "c=null", "d=[1,2]", "e=true", "f=a=b"]) == {
        "a": 1, "b": "x y", "c": None, "d": [1, 2], "e": True, "f": "a=b",
    }  # fmt: skip
    with pytest.raises(ValueError):
        parse_params(["novalue"])


def test_format_table():
    out = format_table(["a", "bb"], [[1, "x"], [None, {"k": [1]}]])
    lines = out.splitlines()
    assert lines[0].split("|")[0].strip() == "a" and lines[-1] == "(2 rows)"


def test_query_command(store, monkeypatch, capsys):
    _seed(store)
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.database)
    assert main(["query", "MATCH (m:Model) WHERE m.uid = $u RETURN m.name AS name", "--param", "u=m"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "before" in out and "(1 row)" in out
    assert main(["query", "--lib", "models", "--format", "json"]) == 0
    assert '"model": "m"' in capsys.readouterr().out
    assert main(["query", "--list"]) == 0
    assert "shared_neurons" in capsys.readouterr().out
    assert main(["query", "MATCH (m) DETACH DELETE m"]) == 2  # the error contract: a refused query is bad input
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err
    assert main(["query", "--lib", "nope"]) == 2  # an unknown library query is bad input
    assert "no library query" in capsys.readouterr().err
    assert store.run("MATCH (n) RETURN count(n) AS n") == [{"n": 1}]


# --------------------------------------------------------------------------- layer 2 for external stores
def _external(cfg: StoreConfig, **kw) -> StoreConfig:
    """The test server seen as an external ArcadeDB (NEURFLOW_STORE_URI), admin credentials."""
    return StoreConfig(uri=cfg.uri, user=cfg.user, password=cfg.password, database=cfg.database, embedded=False, **kw)


def test_only_neo4j_itself_is_trusted_with_read_access_mode():
    assert enforces_read_access_mode("Neo4j/5.26.0")
    assert enforces_read_access_mode("Neo4j/5.26.0-aura")
    assert not enforces_read_access_mode("Neo4j/5.26.0 compatible (ArcadeDB 26.10.2)")
    assert not enforces_read_access_mode("Neo4j/v5.11.0 compatible graph database server - Memgraph")
    assert not enforces_read_access_mode("")


def test_external_arcadedb_without_a_reader_account_is_refused(store):
    _seed(store)
    cfg = _external(store.config)
    for run in (lambda: readonly_store(cfg), lambda: run_readonly("MATCH (n) RETURN count(n) AS n", config=cfg)):
        with pytest.raises(ReadOnlyAccountError) as err:
            run()
        msg = str(err.value)
        assert "\n" not in msg and "NEURFLOW_STORE_READONLY_USER" in msg and "read rights only" in msg


def test_external_arcadedb_with_a_writer_as_reader_is_refused(store):
    _seed(store)  # the probe needs a label to try a create on
    cfg = _external(store.config, readonly_user=store.config.user, readonly_password=store.config.password)
    with pytest.raises(ReadOnlyAccountError, match="can write"):
        readonly_store(cfg)
    assert store.run("MATCH (n) RETURN n.uid AS uid") == [{"uid": "m"}]  # the probe left nothing behind


def test_external_arcadedb_with_the_reader_account_runs(store):
    _seed(store)
    cfg = _external(store.config, readonly_user=store.config.readonly_user, readonly_password=store.config.readonly_password)
    try:
        assert run_readonly("MATCH (m:Model) RETURN m.name AS name", config=cfg) == (["name"], [["before"]])
    finally:
        close_readonly_stores()


def test_a_wrong_reader_password_names_the_reader_variables(store, monkeypatch, capsys):
    """The writer's login is right, the reader's is not: the fix names the read-only account's
    variables (it named NEURFLOW_STORE_USER / NEURFLOW_STORE_PASSWORD)."""
    cfg = _external(store.config, readonly_user=store.config.readonly_user, readonly_password="wrong-password")
    with pytest.raises(StoreError) as err:
        readonly_store(cfg)
    msg = str(err.value)
    assert "NEURFLOW_STORE_READONLY_USER / NEURFLOW_STORE_READONLY_PASSWORD" in msg and "NEURFLOW_STORE_USER /" not in msg
    assert repr(store.config.readonly_user) in msg and "\n" not in msg
    for k, v in {"NEURFLOW_STORE_URI": cfg.uri, "NEURFLOW_STORE_USER": cfg.user, "NEURFLOW_STORE_PASSWORD": cfg.password,
                 "NEURFLOW_STORE_DATABASE": cfg.database, "NEURFLOW_STORE_READONLY_USER": cfg.readonly_user,
                 "NEURFLOW_STORE_READONLY_PASSWORD": "wrong-password"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    assert main(["query", "MATCH (n) RETURN count(n) AS n"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "NEURFLOW_STORE_READONLY_PASSWORD" in err_text
    assert "NEURFLOW_STORE_USER /" not in err_text
    # the writer's own wrong password still names the writer's variables
    with pytest.raises(StoreError, match="NEURFLOW_STORE_USER / NEURFLOW_STORE_PASSWORD"):
        Store(StoreConfig(uri=cfg.uri, user=cfg.user, password="wrong-password", database=cfg.database))


def test_query_command_refuses_an_external_store_without_a_reader(store, monkeypatch, capsys):
    """The attack of issue 11: INSERT with admin credentials and no reader account."""
    cfg = store.config
    for k, v in {"NEURFLOW_STORE_URI": cfg.uri, "NEURFLOW_STORE_USER": cfg.user, "NEURFLOW_STORE_PASSWORD": cfg.password,
                 "NEURFLOW_STORE_DATABASE": cfg.database}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    for k in ("NEURFLOW_STORE_READONLY_USER", "NEURFLOW_STORE_READONLY_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    assert main(["query", "INSERT (p:Inserted {a: 1})"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INSERT" in err
    assert main(["query", "MATCH (n) RETURN count(n) AS n"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NEURFLOW_STORE_READONLY_USER" in err and "Traceback" not in err
    assert "Inserted" not in {r["label"] for r in store.run("CALL db.labels() YIELD label RETURN label")}


def test_writes_that_pass_no_parser_are_refused_by_the_reader(store):
    """Layers 2 and 3 without layer 1: what the attacker ran with the admin account."""
    _seed(store)
    ro = Store(store.config, readonly=True)
    try:
        for write in ("INSERT (p:Model {uid: 'gql'})", "CALL { CREATE (:Model {uid: 'batch'}) } IN TRANSACTIONS",
                      "LOAD CSV FROM 'file:///etc/hostname' AS row RETURN row"):  # fmt: skip
            with pytest.raises(StoreError):
                execute_rolled_back(ro, write)
    finally:
        ro.close()
    assert store.run("MATCH (n) RETURN n.uid AS uid") == [{"uid": "m"}]


# --------------------------------------------------------------------------- the time limit
EXPENSIVE = "UNWIND range(1, 100000) AS a UNWIND range(1, 100000) AS b RETURN count(*) AS n"  # 10^10 rows
SERVER_LIMIT_S = 3.0


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """An embedded server of its own whose statements stop after SERVER_LIMIT_S (the shared test
    server keeps the default 60 s, which no other test should wait for)."""
    from ingest.store.embedded import ensure_embedded_server, free_port, stop_embedded_server

    folder = tmp_path_factory.mktemp("limited-store")
    cfg = ensure_embedded_server(folder, bolt_port=free_port(), http_port=free_port(), heap="512m",
                                 owner_pid=os.getpid(), query_timeout_s=SERVER_LIMIT_S)  # fmt: skip
    pid = json.loads((folder / "server.json").read_text())["pid"]
    try:
        yield cfg, pid
    finally:
        close_readonly_stores()
        stop_embedded_server(folder)


def _wait_idle(pid: int, deadline_s: float = 20.0) -> float:
    """CPU seconds the server used over the last second, once below 0.2 (or at the deadline)."""
    end = time.monotonic() + deadline_s
    while True:
        c0 = _cpu_seconds(pid)
        time.sleep(1.0)
        used = _cpu_seconds(pid) - c0
        if used < 0.2 or time.monotonic() > end:
            return used


def test_the_server_stops_an_expensive_query_at_the_limit(limited_server):
    cfg, pid = limited_server
    readonly_store(cfg)  # the account check happens once, not inside the timed part
    with open(os.path.join(cfg.data_dir, "server.json")) as fh:
        assert json.load(fh)["query_timeout_s"] == SERVER_LIMIT_S
    busy: list[float] = []

    def sample():  # the server's CPU while the query runs: it is really computing
        c0 = _cpu_seconds(pid)
        time.sleep(2.0)
        busy.append(_cpu_seconds(pid) - c0)

    sampler = threading.Thread(target=sample)
    t0 = time.monotonic()
    sampler.start()
    with pytest.raises(QueryTimeout) as err:
        run_readonly(EXPENSIVE, config=cfg, timeout=SERVER_LIMIT_S)
    elapsed = time.monotonic() - t0
    sampler.join()
    assert "\n" not in str(err.value) and "time limit" in str(err.value)
    assert elapsed < SERVER_LIMIT_S + 1.5, elapsed  # the server's own answer, before the client's cut
    t1 = time.monotonic()
    assert run_readonly("RETURN 1 AS ok", config=cfg) == (["ok"], [[1]])
    assert time.monotonic() - t1 < 1.0  # responsive right after
    after = _wait_idle(pid, deadline_s=3.0)
    assert after < 0.2 and after < busy[0] / 3, (after, busy)  # and no longer computing


def test_the_client_stops_waiting_even_when_the_server_does_not(limited_server, monkeypatch):
    """A limit shorter than the server's: the client cuts its own connection at limit + grace."""
    import ingest.store.readonly as readonly

    cfg, pid = limited_server
    readonly_store(cfg)
    monkeypatch.setattr(readonly, "CLIENT_GRACE_S", 0.3)
    t0 = time.monotonic()
    with pytest.raises(QueryTimeout, match="0.5 s") as err:
        run_readonly(EXPENSIVE, config=cfg, timeout=0.5)
    assert time.monotonic() - t0 < 2.0  # the server would only have answered at 3 s
    # the message says what happens: the store computes on, up to its own limit (not "was stopped")
    msg = str(err.value)
    assert "was stopped" not in msg and "\n" not in msg
    assert "computes it on for up to 2 s more" in msg and f"its own limit is {SERVER_LIMIT_S:g} s" in msg, msg
    c0 = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - c0 > 0.2  # and so it does
    assert run_readonly("RETURN 1 AS ok", config=cfg) == (["ok"], [[1]])
    assert _wait_idle(pid) < 0.2  # the server's own limit ends the abandoned query


def test_the_client_limit_message_of_a_store_whose_limit_is_unknown(limited_server, monkeypatch):
    """An external store (no server.json to read): the message says it may still compute."""
    import ingest.store.readonly as readonly

    cfg, pid = limited_server
    monkeypatch.setattr(readonly, "CLIENT_GRACE_S", 0.3)
    external = StoreConfig(uri=cfg.uri, user=cfg.user, password=cfg.password, database=cfg.database,
                           readonly_user=cfg.readonly_user, readonly_password=cfg.readonly_password)  # fmt: skip
    ro = Store(external, readonly=True)
    try:
        with pytest.raises(QueryTimeout) as err:
            execute_rolled_back(ro, EXPENSIVE, timeout=0.5)
    finally:
        ro.close()
    assert "may still be computing it" in str(err.value) and "arcadedb.command.timeout" in str(err.value)
    assert _wait_idle(pid) < 0.2


def test_query_timeout_setting(monkeypatch):
    from ingest.store.embedded import DEFAULT_QUERY_TIMEOUT_S, query_timeout

    assert query_timeout({}) == DEFAULT_QUERY_TIMEOUT_S == 60
    assert query_timeout({"NEURFLOW_STORE_QUERY_TIMEOUT": "2.5"}) == 2.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(StoreError, match="NEURFLOW_STORE_QUERY_TIMEOUT") as err:
            query_timeout({"NEURFLOW_STORE_QUERY_TIMEOUT": bad})
        assert "\n" not in str(err.value)
