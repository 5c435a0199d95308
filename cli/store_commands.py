"""`neurflow store start|stop|status|rebuild-aggregates`, `neurflow query` and `neurflow export`.

Errors follow the command line's one contract (`cli.contract`): bad input (a bad option, a query
the read-only console refuses) is one `error:` line and exit 2, a runtime failure (store down,
query failed) one `error:` line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ingest.queries.jobs import Q_COMPLETE_CIRCUITS, Q_MODELS
from neurflow.errors import NeurflowInputError, NeurflowRuntimeError

DEFAULT_MAX_ROWS = 1000


# --------------------------------------------------------------------------- store start|stop|status
def cmd_store_start(args: argparse.Namespace) -> int:
    """Start the embedded store in the background (or report the running one)."""
    from ingest.store.config import uses_embedded
    from ingest.store.embedded import embedded_status, ensure_embedded_server

    if not uses_embedded():
        raise NeurflowRuntimeError(
            "NEURFLOW_STORE_URI is set, so the store is external and there is nothing to start; "
            "unset NEURFLOW_STORE_URI to use the embedded store"
        )
    was = embedded_status()["running"]
    cfg = ensure_embedded_server()
    print(f"store {'already running' if was else 'started'}: {cfg.uri} (database {cfg.database}, data {cfg.data_dir})")
    return 0


def cmd_store_stop(args: argparse.Namespace) -> int:
    """Stop the embedded store."""
    from ingest.store.embedded import stop_embedded_server

    print("store stopped" if stop_embedded_server() else "store was not running")
    return 0


def cmd_store_status(args: argparse.Namespace) -> int:
    """Show whether the store runs, where, and what it holds."""
    from ingest.store.config import external_config, uses_embedded
    from ingest.store.embedded import embedded_status

    if uses_embedded():
        info: dict[str, Any] = {"kind": "embedded", **embedded_status()}
    else:
        cfg = external_config()
        info = {"kind": "external", "uri": cfg.uri, "database": cfg.database, "user": cfg.user}
    if info.get("running", True) and getattr(args, "counts", False):
        from ingest.store.connection import Store, running_config

        with Store(running_config()) as store:
            info["counts"] = store.counts()
    if getattr(args, "json", False):
        print(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            print(f"{k:>10}: {v}")
    return 0 if info.get("running", True) else 1  # like `systemctl status`: 1 = not running


# --------------------------------------------------------------------------- store rebuild-aggregates
def cmd_store_rebuild_aggregates(args: argparse.Namespace) -> int:
    """Rebuild the writer's aggregates from the raw relationships (a store written before the
    writer kept them: opening it as the writer does this on its own when they are missing), or
    with --check only compare them (exit 1 with one line when they differ)."""
    from ingest.write.aggregate_maintenance import FIX_COMMAND, differences, rebuild
    from ingest.store.schema import ensure_schema
    from ingest.store.runner import Runner
    from ingest.store.connection import Store, start_store

    with Store(start_store()) as store:
        if args.model is not None:
            models = [r["uid"] for r in store.run(Q_MODELS)]
            if args.model not in models:
                raise NeurflowInputError(f"--model {args.model!r} is not in the store (models: {', '.join(models) or 'none'})")
        if args.check:
            with Runner(store) as runner:
                diff = differences(runner, args.model)
            if diff:
                raise NeurflowRuntimeError(
                    f"the aggregates differ from the raw relationships in {len(diff)} place{'s' if len(diff) != 1 else ''} "
                    f"(first: {diff[0]}): run `{FIX_COMMAND}`"
                )
            print("aggregates consistent with the raw relationships")
            return 0
        ensure_schema(store, aggregates=False)
        with Runner(store) as runner:
            n = rebuild(runner, args.model)
            circuits = runner.read(Q_COMPLETE_CIRCUITS, {"model": args.model})[0]["n"]
    print(f"rebuilt the aggregates of {circuits} complete circuit{'s' if circuits != 1 else ''} ({n} neuron aggregates)")
    return 0


# --------------------------------------------------------------------------- query
def parse_params(items: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; v is JSON when it parses (numbers, null, true, lists), else a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise NeurflowInputError(f"--param {item!r} is not of the form name=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _cell(v: Any, width: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= width else s[: width - 3] + "..."


def format_table(columns: list[str], rows: list[list[Any]], *, more: bool = False) -> str:
    """A text table; `more`: the result had more rows than shown (the footer says so)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}" + (", capped: the query returned more)" if more else ")"))
    return "\n".join(out)


def _require_aggregates() -> None:
    """The library queries read the writer's aggregates; on a store written before them (which
    this read-only account cannot rebuild) they would answer nothing: one line naming the fix."""
    from ingest.write.aggregate_maintenance import missing, missing_message
    from ingest.store.runner import Runner
    from ingest.store.connection import Store, start_store

    with Store(start_store(), readonly=True) as store, Runner(store) as runner:
        stale = missing(runner)
    if stale:
        raise NeurflowRuntimeError(missing_message(stale))


def cmd_query(args: argparse.Namespace) -> int:
    """Run read-only Cypher (or a library query) and print a table."""
    from ingest.queries.library import QUERIES, get_query
    from ingest.store.readonly import run_readonly

    if args.list:
        for q in QUERIES:
            params = ", ".join(f"{k}={json.dumps(v)}" for k, v in q.params.items())
            print(f"{q.name}: {q.title} ({params or 'no parameters'})\n    {q.description}")
        return 0
    if args.max_rows < 1:
        raise NeurflowInputError(f"--max-rows must be at least 1, got {args.max_rows}")
    params = parse_params(args.param)
    if args.lib:
        try:
            q = get_query(args.lib)
            cypher, params = q.cypher, q.bind(**params)
        except KeyError as exc:  # unknown query or parameter: the message names the known ones
            raise NeurflowInputError(exc.args[0] if exc.args else str(exc)) from None
        _require_aggregates()
    elif args.cypher:
        cypher = args.cypher
    else:
        raise NeurflowInputError("give a Cypher query, --lib NAME or --list")
    # one row more than shown tells whether the result was capped
    columns, rows = run_readonly(cypher, params, max_rows=args.max_rows + 1)
    capped = len(rows) > args.max_rows
    rows = rows[: args.max_rows]
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], indent=1, default=str))
    else:
        print(format_table(columns, rows, more=capped))
    if capped:  # stderr, so that the JSON on stdout stays valid
        print(f"note: showing the first {args.max_rows:,} rows; the query returned more "
              f"(use --max-rows N for more, or LIMIT / aggregation in the query)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """Export the complete circuits of the store."""
    from ingest.read.export import export_store
    from ingest.store.connection import Store, start_store

    with Store(start_store(), readonly=True) as store:
        counts = export_store(store, args.format, args.out, model=args.model)
    print(f"exported {counts['nodes']} nodes and {counts['relationships']} relationships to {args.out} ({args.format})")
    return 0


# --------------------------------------------------------------------------- wiring
def add_store_commands(subparsers: Any) -> None:
    """Add ``store``, ``query`` and ``export`` to an argparse subparsers object (each sets `func`)."""
    store = subparsers.add_parser("store", help="manage the graph store (start, stop, status, rebuild-aggregates)")
    ssub = store.add_subparsers(dest="store_command", metavar="{start,stop,status,rebuild-aggregates}")
    ssub.required = True
    ssub.add_parser("start", help="start the embedded store in the background").set_defaults(func=cmd_store_start)
    ssub.add_parser("stop", help="stop the embedded store").set_defaults(func=cmd_store_stop)
    st = ssub.add_parser("status", help="is the store running, where")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--counts", action="store_true", help="also count nodes and relationships")
    st.set_defaults(func=cmd_store_status)
    ra = ssub.add_parser("rebuild-aggregates", help="rebuild the aggregates the writer keeps (stores written before them)")
    ra.add_argument("--check", action="store_true", help="only compare them with the raw relationships (exit 1 if they differ)")
    ra.add_argument("--model", default=None, help="only this model")
    ra.set_defaults(func=cmd_store_rebuild_aggregates)

    q = subparsers.add_parser("query", help="run read-only Cypher against the store and print a table")
    q.add_argument("cypher", nargs="?", help="the Cypher query (read-only)")
    q.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE", help="a query parameter (JSON value or text); repeatable")
    q.add_argument("--lib", metavar="NAME", help="run a query of the library by name (see --list)")
    q.add_argument("--list", action="store_true", help="list the library queries")
    q.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    q.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                   help="rows to show at most (default %(default)s); a capped result says so on stderr")
    q.set_defaults(func=cmd_query)

    e = subparsers.add_parser("export", help="export the store's complete circuits")
    e.add_argument("--format", choices=("parquet", "graphml", "json"), required=True)
    e.add_argument("--out", required=True, help="output file (graphml, json) or folder (parquet)")
    e.add_argument("--model", default=None, help="only this model")
    e.set_defaults(func=cmd_export)
