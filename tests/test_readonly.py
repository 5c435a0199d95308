"""The three read-only layers, each on its own, against the real embedded server; and `neurflow query`."""

from __future__ import annotations

import pytest

from ingest.errors import ReadOnlyViolation
from ingest.readonly import blank, check_readonly, execute_rolled_back, run_readonly
from ingest.store import Store
from ingest.store_cli import format_table, main, parse_params

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
    from ingest.errors import StoreQueryError

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
    assert main(["query", "MATCH (m) DETACH DELETE m"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err
    assert main(["query", "--lib", "nope"]) == 1
    assert "no library query" in capsys.readouterr().err
    assert store.run("MATCH (n) RETURN count(n) AS n") == [{"n": 1}]
