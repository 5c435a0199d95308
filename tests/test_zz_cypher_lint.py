"""Every Cypher statement the project sends to a store, checked by Neo4j's own Cypher front end.

No Neo4j server runs here, so the Neo4j half of "one code path, two stores" is checked by Neo4j's
parser and semantic analysis (the npm package ``@neo4j-cypher/language-support``, installed by
``make cypher-lint``; see tests/cypher_lint/).  This file runs last (tests/fixtures_cypher.py
moves it there) and lints, in one node process:

- every distinct statement the store layer sent during this session (recorded by
  `ingest.store.cypher_record`, subprocesses included), and
- every statement the code holds (library, app, schema, writer, evaluations, labelling, debug,
  plain string literals given to run / write / read), reached by a test or not.

What fails: a diagnostic of severity *error*, that is a syntax error, a semantic error
(undefined variable, wrong argument types, a clause Neo4j 5 does not accept, ...) or a
function / procedure that a stock Neo4j 5 does not have (the package's catalogue of a Neo4j 5
server, without the apoc.* and gds.* plugins).  Statements are analysed as Cypher 5; their
parameters are declared from the statement itself.  No labels, types or property keys are
given, so nothing is reported about names missing from a database.  Warnings (deprecations)
do not fail; they are printed in the summary.  Recorded calls must also pass every parameter
their statement uses (Neo4j refuses a statement with a missing parameter).

The console's clause check (`ingest.store.readonly.check_readonly`) is compared with Neo4j's grammar
on a table: the cases of tests/test_readonly.py plus every write and administration form of
Neo4j 5 Cypher.  A statement is a write for Neo4j when its parse tree holds a write clause
(CREATE, INSERT, MERGE, SET, REMOVE, DELETE, FOREACH, LOAD CSV, CALL {...} IN TRANSACTIONS), a
schema or administration command, TERMINATE, or a CALL of a procedure whose mode in Neo4j's
catalogue is WRITE or SCHEMA (or an admin DBMS procedure).
"""

from __future__ import annotations

import ast
import os
import re
import time
from collections import defaultdict
from typing import Any

import pytest

from ingest.store.cypher_record import ENV
from ingest.store.errors import ReadOnlyViolation
from ingest.store.readonly import READ_PROCEDURES, check_readonly
from tests import cypher_lint
from tests.fixtures_cypher import SUMMARY

# --------------------------------------------------------------------------- the console table
def _console_cases(name: str) -> list[str]:
    """A list of statements of tests/test_readonly.py, read from its source (importing it would
    import the CLI modules it tests)."""
    tree = ast.parse((cypher_lint.ROOT / "tests" / "test_readonly.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise LookupError(f"tests/test_readonly.py has no {name}")


REFUSED, ALLOWED, WRITES = _console_cases("REFUSED"), _console_cases("ALLOWED"), _console_cases("WRITES")
# every write and administration form of Neo4j 5 Cypher that tests/test_readonly.py does not hold
EXTRA_WRITES = [
    "MERGE (a:X {uid: 1}) ON CREATE SET a.t = 1 ON MATCH SET a.u = 2",
    "MATCH (a:X), (b:Y) MERGE (a)-[:R]->(b)",
    "MATCH (n) SET n += {a: 1}",
    "MATCH (n) SET n = {}",
    "MATCH (n) REMOVE n:Label",
    "FOREACH (x IN [1, 2] | MERGE (:X {i: x}))",
    "LOAD CSV FROM 'https://example.com/y.csv' AS line CREATE (:X {a: line[0]})",
    "LOAD CSV WITH HEADERS FROM 'file:///x.csv' AS row FIELDTERMINATOR ';' RETURN row",
    "CALL { CREATE (:X) } IN TRANSACTIONS OF 100 ROWS",
    "CALL () { CREATE (:X) } IN 2 CONCURRENT TRANSACTIONS",
    "UNWIND [1] AS i CALL (i) { CREATE (:X {i: i}) } IN TRANSACTIONS OF 1 ROW ON ERROR CONTINUE REPORT STATUS AS s RETURN s",
    "INSERT (a:X {a: 1})-[:R]->(b:Y)",
    "MATCH (n) CALL (n) { DETACH DELETE n }",
    "WITH 1 AS x CALL (x) { CREATE (:X {x: x}) }",
    "CREATE INDEX i FOR (n:X) ON (n.a)",
    "CREATE RANGE INDEX r IF NOT EXISTS FOR ()-[r:R]-() ON (r.a)",
    "CREATE TEXT INDEX t FOR (n:X) ON (n.a)",
    "CREATE POINT INDEX p FOR (n:X) ON (n.loc)",
    "CREATE FULLTEXT INDEX f FOR (n:X|Y) ON EACH [n.a, n.b]",
    "CREATE LOOKUP INDEX l FOR (n) ON EACH labels(n)",
    "CREATE VECTOR INDEX v IF NOT EXISTS FOR (n:X) ON n.e OPTIONS {indexConfig: {`vector.dimensions`: 3}}",
    "DROP INDEX i IF EXISTS",
    "CREATE CONSTRAINT c FOR (n:X) REQUIRE n.a IS NOT NULL",
    "CREATE CONSTRAINT k FOR (n:X) REQUIRE (n.a, n.b) IS NODE KEY",
    "CREATE CONSTRAINT t FOR ()-[r:R]-() REQUIRE r.a IS :: INTEGER",
    "DROP CONSTRAINT c IF EXISTS",
    "CREATE DATABASE d IF NOT EXISTS",
    "CREATE OR REPLACE DATABASE d",
    "CREATE COMPOSITE DATABASE c",
    "DROP DATABASE d IF EXISTS",
    "ALTER DATABASE d SET TOPOLOGY 1 PRIMARY",
    "START DATABASE d",
    "USE system CREATE DATABASE x",
    "CREATE ALIAS a FOR DATABASE neo4j",
    "ALTER ALIAS a SET DATABASE TARGET neo4j",
    "DROP ALIAS a FOR DATABASE",
    "CREATE USER bob SET PASSWORD 'secret' CHANGE NOT REQUIRED",
    "ALTER USER bob SET PASSWORD 'other'",
    "ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'",
    "RENAME USER bob TO rob",
    "DROP USER rob",
    "CREATE ROLE r AS COPY OF reader",
    "RENAME ROLE r TO s",
    "DROP ROLE s",
    "GRANT ROLE r TO bob",
    "REVOKE ROLE r FROM bob",
    "GRANT TRAVERSE ON GRAPH * NODES * TO r",
    "DENY DELETE ON GRAPH * TO r",
    "REVOKE GRANT WRITE ON GRAPH * FROM r",
    "ALTER SERVER 'x' SET OPTIONS {modeConstraint: 'PRIMARY'}",
    "RENAME SERVER 'a' TO 'b'",
    "DROP SERVER 'a'",
    "DEALLOCATE DATABASES FROM SERVER 'a'",
    "REALLOCATE DATABASES",
    "DRYRUN REALLOCATE DATABASES",
    "SHOW TRANSACTIONS YIELD transactionId AS t TERMINATE TRANSACTIONS t",
    "CALL db.createProperty('x')",
    "CALL dbms.setConfigValue('db.logs.query.enabled', 'off')",
    "CALL db.index.vector.createNodeIndex('i', 'X', 'e', 3, 'cosine')",
    "MATCH (n:X) CALL db.create.setNodeVectorProperty(n, 'e', [1.0])",
]
# procedure calls the console refuses by its allow-list although Neo4j does not count them as writes
EXTRA_PROCEDURE_CALLS = [
    "CALL db.awaitIndexes()",
    "CALL tx.setMetaData({a: 1})",
    "CALL db.clearQueryCaches()",
]
# reads of Neo4j 5 Cypher the console must let through
EXTRA_READS = [
    "USE neo4j MATCH (n) RETURN n",
    "SHOW CONSTRAINTS",
    "SHOW DATABASES",
    "SHOW USERS",
    "SHOW FUNCTIONS",
    "SHOW PROCEDURES YIELD name RETURN name",
    "MATCH (n) RETURN n UNION MATCH (m) RETURN m AS n",
    "EXPLAIN MATCH (n) RETURN n",
    "PROFILE MATCH (n) RETURN n",
    "CYPHER 5 MATCH (n) RETURN n",
    "MATCH (n) WHERE EXISTS { MATCH (n)-->() } RETURN n",
    "MATCH (n) RETURN COUNT { (n)-->() } AS c, COLLECT { MATCH (n)-->(m) RETURN m.x } AS xs",
    "MATCH (n) RETURN CASE WHEN n.x THEN 1 ELSE 0 END AS y",
    "MATCH (n) WITH n FINISH",
    "MATCH SHORTEST 1 (a)-->+(b) RETURN a, b",
    "MATCH (a) ((x)-[:R]->(y)){1,3} (b) RETURN a, b",
    "OPTIONAL CALL db.labels() YIELD label RETURN label",
    "CALL () { MATCH (n) RETURN n } RETURN n",
    "MATCH (n:A|B) RETURN n ORDER BY n.x SKIP 1 LIMIT 2",
    "UNWIND [1, 2] AS created RETURN created",
    "MATCH (n) RETURN n.uid AS merge, [x IN range(1, 3) WHERE x > 1 | x * 2] AS setting",
]
# reads the console refuses on the safe side: it reads tokens, so a variable named like a clause
# keyword where a clause could stand looks like that clause
KNOWN_OVER_REFUSALS = [
    "WITH 1 AS set RETURN set",
]
# the writes of tests/test_readonly.py that bypass the console's check (layers 2 and 3 refuse them)
BYPASS_WRITES = [
    "INSERT (p:Model {uid: 'gql'})",
    "CALL { CREATE (:Model {uid: 'batch'}) } IN TRANSACTIONS",
    "LOAD CSV FROM 'file:///etc/hostname' AS row RETURN row",
]
TABLE = list(dict.fromkeys([*REFUSED, *WRITES, *BYPASS_WRITES, *EXTRA_WRITES, *EXTRA_PROCEDURE_CALLS, *ALLOWED, *EXTRA_READS, *KNOWN_OVER_REFUSALS]))

# the linter must see these errors, or it checks nothing (a broken install, an analysis that fails quietly)
CANARIES = {
    "syntax": ("MATCH (n RETURN n", None),
    "semantic": ("MATCH (n) RETURN m", None),
    "unknown function": ("RETURN nosuch.fn(1) AS x", None),
    "undeclared parameter": ("RETURN $x AS x", []),
}

_CATALOGUE_MISS = re.compile(r"^(Function|Procedure) \S+ is not present in the database")


def _errors(result: dict[str, Any], *, catalogue: bool = True) -> list[dict[str, Any]]:
    return [d for d in result["diagnostics"]
            if d["severity"] == "error" and (catalogue or not _CATALOGUE_MISS.match(d["message"]))]  # fmt: skip


def _neo4j_writes(result: dict[str, Any]) -> list[str]:
    """What makes the statement a write for Neo4j: grammar rules and write procedures."""
    procs = [p["name"] for p in result["procedures"] if p["mode"] in ("WRITE", "SCHEMA") or (p["mode"] == "DBMS" and p["admin"])]
    return result["writeRules"] + [f"CALL {p}" for p in procs]


def _console(cypher: str) -> str | None:
    try:
        check_readonly(cypher)
    except ReadOnlyViolation as exc:
        return str(exc)
    return None


def _short(cypher: str, n: int = 160) -> str:
    one = " ".join(cypher.split())
    return one if len(one) <= n else one[: n - 3] + "..."


# --------------------------------------------------------------------------- one lint for all
@pytest.fixture(scope="module")
def linted(request: pytest.FixtureRequest) -> dict[str, Any]:
    reason = cypher_lint.missing()
    if reason:
        if os.environ.get(cypher_lint.REQUIRE_ENV):
            pytest.fail(f"{reason} ({cypher_lint.REQUIRE_ENV} is set)")
        pytest.skip(reason)
    recorded = cypher_lint.recorded(os.environ.get(ENV))
    static = cypher_lint.static_statements()
    names: dict[str, list[str]] = defaultdict(list)  # statement text -> where it comes from
    for name, text in static:
        names[text].append(name)
    for entry in recorded:
        if entry["where"] not in names[entry["query"]]:
            names[entry["query"]].append(entry["where"])
    project = list(names)
    items = [{"name": f"statement {i}", "query": q} for i, q in enumerate(project)]
    items += [{"name": f"table {i}", "query": q} for i, q in enumerate(TABLE)]
    items += [{"name": f"canary {k}", "query": q, **({} if p is None else {"parameters": p})} for k, (q, p) in CANARIES.items()]
    procedures = sorted(READ_PROCEDURES)
    items += [{"name": f"procedure {p}", "query": f"CALL {p}()"} for p in procedures]
    t0 = time.monotonic()
    answer = cypher_lint.lint(items)
    seconds = time.monotonic() - t0
    results = answer["results"]
    out = {
        "answer": answer,
        "project": {q: (names[q], r) for q, r in zip(project, results[: len(project)])},
        "table": dict(zip(TABLE, results[len(project) : len(project) + len(TABLE)])),
        "canaries": dict(zip(CANARIES, results[len(project) + len(TABLE) : len(project) + len(TABLE) + len(CANARIES)])),
        "read_procedures": dict(zip(procedures, results[len(project) + len(TABLE) + len(CANARIES) :])),
        "recorded": recorded,
    }
    sent = {e["query"] for e in recorded}
    held = {q for _, q in static}
    errors = sum(1 for _, r in out["project"].values() if _errors(r))
    warnings = [(n, d) for n, r in out["project"].values() for d in r["diagnostics"] if d["severity"] != "error"]
    lines = [
        f"{len(project)} statements checked by Neo4j's Cypher front end ({cypher_lint.PACKAGE} {answer['version']}, "
        f"Cypher 5): {len(sent)} sent by the store layer during this run, {len(held)} held by the code "
        f"({len(sent & held)} both); {errors} with errors, {len(warnings)} warnings; "
        f"{len(TABLE)} console clause-check cases compared with Neo4j's grammar; {seconds:.1f} s "
        f"({answer['cached']} of {len(items)} answers from .cypher-lint/cache.json)",
    ]
    lines += [f"  warning: {' | '.join(n)}: line {d['line']}:{d['column']} {d['message']}" for n, d in warnings[:10]]
    request.config.stash[SUMMARY] = lines
    return out


# --------------------------------------------------------------------------- tests
def test_the_linter_reports_errors(linted):
    """Neo4j's front end runs: a syntax error, a semantic error, an unknown function and an
    undeclared parameter are all reported as errors."""
    silent = [k for k, r in linted["canaries"].items() if not _errors(r)]
    if silent:
        pytest.fail(f"the Cypher linter reported nothing for: {', '.join(silent)}", pytrace=False)
    assert linted["answer"]["catalogue"], "the linter has no function / procedure catalogue"


def test_every_statement_passes_neo4j_front_end(linted):
    """Every statement sent during the session and every statement of the code: no errors."""
    bad = []
    for query, (names, result) in linted["project"].items():
        for d in _errors(result):
            bad.append(f"{' | '.join(names)}: line {d['line']}:{d['column']} {d['message']}\n    {_short(query)}")
    if bad:
        pytest.fail(f"{len(bad)} error(s) from Neo4j's Cypher front end:\n" + "\n".join(bad), pytrace=False)


def test_recorded_calls_pass_every_parameter(linted):
    """Neo4j refuses a statement whose parameter is not given (ArcadeDB may read it as null)."""
    bad = []
    for entry in linted["recorded"]:
        _, result = linted["project"][entry["query"]]
        missing = sorted(set(result["parameters"]) - set(entry["parameters"]))
        if missing:
            bad.append(f"{entry['where']}: ${', $'.join(missing)} not passed\n    {_short(entry['query'])}")
    if bad:
        pytest.fail("statements sent without parameters they use:\n" + "\n".join(bad), pytrace=False)


def test_console_clause_check_agrees_with_neo4j_grammar(linted):
    """A write for Neo4j's grammar is refused by the console; a read Neo4j parses passes it.
    The console may refuse more only by its procedure / function allow-lists, for statements
    that are not Neo4j Cypher (ArcadeDB's COMMIT, backticked keywords, ...), and for the known
    over-refusals listed above."""
    bad = []
    for cypher, r in linted["table"].items():
        refusal = _console(cypher)
        writes = _neo4j_writes(r)
        syntax = [d["message"] for d in _errors(r, catalogue=False)]
        if writes and refusal is None:
            bad.append(f"the console lets a write through ({', '.join(writes)}): {cypher!r}")
        elif refusal is None and syntax:
            bad.append(f"the console allows a statement Neo4j cannot parse ({syntax[0]}): {cypher!r}")
        elif refusal is not None and not writes and not syntax:
            policy = "may only call" in refusal
            if not policy and cypher not in KNOWN_OVER_REFUSALS:
                bad.append(f"the console refuses a read of Neo4j's grammar ({refusal}): {cypher!r}")
        # the table says what each row is: keep it true
        if cypher in EXTRA_WRITES and not writes:
            bad.append(f"not a write for Neo4j's grammar, move it: {cypher!r}")
        if cypher in EXTRA_READS + KNOWN_OVER_REFUSALS and (writes or syntax):
            bad.append(f"not a read Neo4j parses ({', '.join(writes + syntax)}): {cypher!r}")
        if cypher in KNOWN_OVER_REFUSALS and refusal is None:
            bad.append(f"the console now allows it: move it to EXTRA_READS: {cypher!r}")
    if bad:
        pytest.fail("the console's clause check and Neo4j's grammar disagree:\n" + "\n".join(bad), pytrace=False)


def test_console_read_procedures_are_read_procedures_in_neo4j(linted):
    """Each procedure of the console's allow-list is, in Neo4j's catalogue, a READ procedure, a
    DBMS procedure that is not an admin one (dbms.components), or absent (ArcadeDB / Neo4j 4
    names such as db.indexes)."""
    bad = []
    for name, r in linted["read_procedures"].items():
        (proc,) = r["procedures"] or [{"mode": None, "admin": None}]
        if proc["mode"] not in (None, "READ") and not (proc["mode"] == "DBMS" and proc["admin"] is False):
            bad.append(f"{name}: mode {proc['mode']}{' (admin)' if proc['admin'] else ''} in Neo4j")
    if bad:
        pytest.fail("the console allows procedures Neo4j does not count as reads:\n" + "\n".join(bad), pytrace=False)
