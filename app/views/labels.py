"""Group labels: search the labels of the whole store (library query `label_search`) and edit a
group's label by hand (label_source = manual; `neurflow label` keeps manual labels).

Editing writes with the writer's account, so it is on only when the app was started with
``neurflow app --allow-label-edits``: otherwise anyone who can open the app could change the
store.  Labels are text from an LLM or a person, shown as plain text (never Markdown), so a
label cannot bring links, colours or formulas into the page."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from app import data
from app.settings import LABEL_EDITS_ENV
from app.state import UrlState
from app.views.common import Context, image_row
from ingest.jobs.labelling import set_manual_label
from ingest.store.connection import Store

SHOWN = 500  # label_search rows one page shows (the query says how many match in all)


def edits_allowed() -> bool:
    """Whether this app was started with --allow-label-edits (`neurflow app` sets the variable)."""
    return os.environ.get(LABEL_EDITS_ENV) == "1"


def _save(group_uid: str, text: str) -> None:
    """Write a manual label with the writer account, then drop the cached reads."""
    if not edits_allowed():  # the form is not shown then; a replayed submit must not write either
        st.session_state["labels:saved"] = None
        return

    with Store(data.config()) as store:
        n = set_manual_label(store, group_uid, text)
    data.clear_caches()
    st.session_state["labels:saved"] = (group_uid, text.strip(), n)


def render(url: UrlState, ctx: Context) -> None:
    st.header("Group labels")
    st.caption("Labels come from `neurflow label` (a multimodal LLM, label_source llm:<model>, with the check's score) "
               "or from a person (label_source manual). Search covers every model in the store.")
    text = url.text_input("Search labels (contains, case-insensitive; empty = every labelled group)", key="q", default="")
    everywhere = url.toggle("all models", key="allm", default=False)
    rows = data.lib("label_search", text=text, model=None if everywhere else ctx.model, params=ctx.params, limit=SHOWN)
    if rows:
        total = int(rows[0].get("total") or len(rows))
        st.dataframe(pd.DataFrame(rows).drop(columns=["total"], errors="ignore"), hide_index=True, width="stretch",
                     column_config={"label_score": st.column_config.NumberColumn("score", format="%.2f")})
        if total > len(rows):
            st.caption(f"The first {len(rows)} of {total} labelled groups that match; narrow the search to see the others.")
    else:
        st.caption("no labelled group matches")

    st.subheader("Edit a group's label")
    if not edits_allowed():
        st.caption("Label editing is off. Start the app with `neurflow app --allow-label-edits` to edit labels here "
                   "(anyone who can open the app can then change them), or use `neurflow label`.")
        return
    names = ctx.class_names
    if not names:
        return
    c1, c2 = st.columns(2)
    cls = url.selectbox("Class", list(names), key="class", parse=int, container=c1, format_func=ctx.class_label)
    groups = data.app_query("groups", model=ctx.model, class_index=cls, params=ctx.params)
    if not groups:
        st.info("This class has no complete circuit with groups.")
        return
    by_short = {f"{g['layer']}/g{g['index']}": g for g in groups}
    picked = url.selectbox("Group", list(by_short), key="group", container=c2,
                           format_func=lambda s: s + (f" · {by_short[s]['label']}" if by_short[s].get("label") else ""))  # fmt: skip
    g = by_short[picked]
    members = data.app_query("group_members", group=g["uid"])
    thumbs = [t for m in members for t in m["thumbnails"]][:12]
    image_row(thumbs, width=52)
    saved = st.session_state.get("labels:saved")
    if saved and saved[0] == g["uid"]:
        st.success("Saved." if saved[1] else "Saved: the label is cleared.")
        if saved[1]:
            st.text(saved[1])  # plain text: a label is never rendered as Markdown
    with st.form(key=f"label_form_{g['uid']}"):
        new = st.text_input("Label (one or two sentences; empty clears it)", value=g.get("label") or "", key=f"label_text_{g['uid']}")
        if st.form_submit_button("Save label"):
            _save(g["uid"], new)
            st.rerun()
