"""One script, four pages: the sidebar picks the page, the model and the parameter set; the
page's module draws the rest.  Everything a page shows is in the URL (app/state.py)."""

from __future__ import annotations

import streamlit as st

from app import data
from app.state import PAGES, UrlState
from app.text import md_text, no_server_paths
from app.views import circuit, common, compare, console, overview
from ingest.store.errors import StoreError

VIEWS = {"overview": overview, "circuit": circuit, "compare": compare, "console": console}

from app.views import faithfulness  # noqa: E402 - page added by the evaluations issue

VIEWS["faithfulness"] = faithfulness
PAGES.setdefault("faithfulness", "Is it faithful?")

from app.views import debug, labels  # noqa: E402 - pages added by the debugging / labelling issue

VIEWS.update(debug=debug, labels=labels)
PAGES.setdefault("debug", "Debug an image")
PAGES.setdefault("labels", "Group labels")


def sidebar(url: UrlState) -> str:
    st.sidebar.markdown("## NeurFlow Store")
    st.sidebar.caption("Neuron groups and their interactions, per class, in a graph you can query.")
    return url.radio("Page", list(PAGES), key="page", default="overview", format_func=PAGES.get,
                     container=st.sidebar, label_visibility="collapsed")


def context(url: UrlState) -> common.Context | None:
    """Model and parameter set from the sidebar; None when the store holds no circuits."""
    models = [m for m in data.models() if m.get("complete_circuits")]
    if not models:
        return None
    model = url.selectbox("Model", [m["model"] for m in models], key="model", container=st.sidebar)
    sets = data.param_sets(model)
    names = data.class_names(model)
    labels = {s["params"]: f"{s['params']} · {s['classes']} of {len(names)} classes" for s in sets}
    # one parameter set for every page: comparisons never mix circuits built with other settings
    params = url.selectbox("Parameter set", list(labels), key="params", container=st.sidebar,
                           format_func=labels.get, help="Every page reads the circuits of this parameter set; "
                           "the default is the one with the most classes.")
    chosen = next((s for s in sets if s["params"] == params), None)
    if chosen is not None:
        st.sidebar.caption(md_text(data.describe_param_set(chosen)))
    return common.Context(model=model, params=params, class_names=names, layers=data.layers(model), param_sets=sets)


def store_caption() -> None:
    try:
        cfg = data.config()
        st.sidebar.caption(f"Store: {data.store_kind(cfg)} · {md_text(no_server_paths(cfg.uri))} · "
                           f"database {md_text(cfg.database or 'default')}")
    except StoreError:
        pass


def main() -> None:
    url = UrlState()
    page = sidebar(url)
    notice = st.empty()  # the top of the page: where unusable link values are reported
    try:
        ctx = context(url)
        store_caption()
        if ctx is None and page != "console":
            st.header(PAGES[page])
            common.empty_store_message()
        else:
            VIEWS[page].render(url, ctx or common.Context(model=None, params=None))
    except StoreError as exc:
        common.store_error_message(exc)
        return  # the URL stays as it came: Retry (a rerun) restores the same view
    url.report_rejected(notice)
    url.commit()
