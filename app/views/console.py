"""Cypher console: the saved, parameterised queries of ingest/queries/library.py (editable) or your own
Cypher, run read-only with parameters; results as a table, as a graph when they hold nodes and
relationships, and as CSV.

A link with ``run=1`` runs at once only an unedited library query; edited or custom Cypher from
a link is shown and runs on a click of Run (a link must not make its visitor start a query)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from app import data
from app.console import ConsoleResult, parameter_names, run_console
from app.graphs import result_figure
from app.state import UrlState, dumps_param, loads_param
from app.text import csv_cell, md_text, no_server_paths, server_roots
from app.views.common import Context
from ingest.store.errors import ReadOnlyViolation, StoreError
from ingest.queries.app_reads import CONSOLE_EXAMPLE_CYPHER
from ingest.queries.library import QUERIES, QUERY_BY_NAME

CUSTOM = "custom"
EXAMPLE = CONSOLE_EXAMPLE_CYPHER


@st.cache_data(show_spinner=False, ttl=data.RESULT_TTL_S, max_entries=64)
def _run(version_key: str, cypher: str, params: dict[str, Any]) -> ConsoleResult:  # noqa: ARG001
    return run_console(cypher, params, config=data.config())


def _cell(v: Any, roots: list) -> Any:
    """A result value as a visitor sees it: lists and maps as JSON, and no server path in any text
    (the store keeps absolute paths, e.g. ``Image.source`` and a folder circuit's ``data_source``)."""
    if isinstance(v, (dict, list)):
        v = json.dumps(v, default=str)
    return no_server_paths(v, roots) if isinstance(v, str) else v


def _restore(key: str, text: str) -> None:
    st.session_state["w:" + key] = text
    st.session_state["keep:" + key] = text


def render(url: UrlState, ctx: Context) -> None:
    st.header("Cypher console")
    st.caption("Read-only: write clauses are refused before anything is sent, the query runs with the read-only "
               "account, and its transaction is always rolled back. Values go in as parameters ($name).")
    names = [q.name for q in QUERIES] + [CUSTOM]
    qname = url.selectbox("Query", names, key="q", default=names[0],
                          format_func=lambda n: "✎ your own Cypher" if n == CUSTOM else f"{QUERY_BY_NAME[n].title}  ({n})")
    query = QUERY_BY_NAME.get(qname)
    if query is not None:
        st.markdown(query.description)
    original = query.cypher.strip() if query else EXAMPLE
    cypher = url.text_area("Cypher", key=f"cy_{qname}", default=original, height=220 if query else 140)
    if query is not None and cypher.strip() != original:
        st.button("Restore the library text", key="restore", on_click=_restore, args=(f"cy_{qname}", original))
    # parameters: the library query's (with defaults; model = the model in use) or the $names of the text
    declared = dict(query.params) if query else {}
    pnames = list(declared) + [p for p in parameter_names(cypher) if p not in declared]
    params: dict[str, Any] = {}
    if pnames:
        st.markdown("**Parameters** (JSON-ish: `null`, numbers, `true`, `[1, 2]`, text)")
        cols = st.columns(min(4, len(pnames)))
        for i, p in enumerate(pnames):
            default = declared.get(p)
            if p == "model" and default is None and ctx.model:
                default = ctx.model
            raw = url.text_input(md_text(f"${p}"), key=f"p.{qname}.{p}", default=dumps_param(default), container=cols[i % len(cols)])
            params[p] = loads_param(raw)
    run_key = json.dumps([qname, cypher, params], sort_keys=True, default=str)
    # A shared link with run=1 shows its result at once only for a library query as the library
    # has it (its parameters are values): whoever opens a link must not start someone else's
    # Cypher, expensive or worse, without reading it first.
    edited = query is None or cypher.strip() != original
    from_link = url.get("run") == "1" and "console_ran" not in st.session_state
    if from_link and not edited:
        st.session_state["console_ran"] = run_key
    if st.button("Run", type="primary", key="run_query"):
        st.session_state["console_ran"] = run_key
    if st.session_state.get("console_ran") != run_key:
        if from_link:
            st.info("This link carries Cypher that is not a library query as written in the library: "
                    "read it above, then press Run to execute it.", icon="ℹ️")
        else:
            st.caption("Press Run to execute.")
        return
    url.set("run", 1)
    try:
        with st.spinner("Running…"):
            result = _run(data.version(), cypher, params)
    except ReadOnlyViolation as exc:
        msg = str(exc)
        msg = msg[len("refused: "):] if msg.lower().startswith("refused: ") else msg
        st.error(f"Refused (read-only console): {md_text(msg)}", icon="⛔")  # it may quote the Cypher of a link
        return
    except StoreError as exc:
        st.error(md_text(no_server_paths(exc)), icon="⚠️")
        return
    _show(result, qname)


def _show(result: ConsoleResult, qname: str) -> None:
    n = len(result.rows)
    st.success(f"{n} row{'s' if n != 1 else ''} in {result.ms:.0f} ms" + (" (stopped at the row limit)" if result.truncated else ""))
    roots = server_roots()  # once per result, not once per cell
    df = pd.DataFrame([[_cell(v, roots) for v in row] for row in result.rows], columns=result.columns)
    tabs = ["Table", "Graph"] if result.has_graph else ["Table"]
    shown = st.tabs(tabs)
    with shown[0]:
        st.dataframe(df, hide_index=True, width="stretch")
        # text a spreadsheet would run as a formula (=IMAGE("http://..."), say) is quoted in the download
        st.download_button("Download CSV", df.map(csv_cell).to_csv(index=False).encode(), file_name=f"{qname}.csv",
                           mime="text/csv", key="csv")
    if result.has_graph:
        with shown[1]:
            st.plotly_chart(result_figure(result.nodes, result.rels), key="result_graph", config={"displaylogo": False})
            st.caption(f"{len(result.nodes)} nodes, {len(result.rels)} relationships")
