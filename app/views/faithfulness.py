"""Faithfulness: the stored `Evaluation` numbers of the model's circuits (written by `neurflow evaluate`).

A table and plots, for one class or averaged over the classes: class accuracy with the critical
sets masked / retained against random sets of the same size, the optimality of core sets and
the correlation of the edge weights with what masking does."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data
from app.state import UrlState
from app.views.common import Context
from ingest.errors import StoreError

ALL = -1


def _read(model: str, params: str | None) -> list[dict]:
    from ingest.evaluations import read_evaluations

    try:
        return read_evaluations(data.store(), model, params)
    except StoreError as exc:  # a store that never saw an Evaluation may not know the label
        if "Evaluation" in str(exc) or "HAS_EVALUATION" in str(exc):
            return []
        raise


def render(url: UrlState, ctx: Context) -> None:
    from ingest.evaluations import correlation_figure, fidelity_figure, summary_table

    st.header("Is it faithful?")
    st.caption(
        "Numbers of `neurflow evaluate`, on held-out images of each class. Fidelity: class accuracy with a "
        "layer's critical neurons zeroed (mask) or with only them kept (retain), against random sets of the "
        "same size. Optimality: share of random sets that a neuron's core set beats (lower top-k overlap "
        "after masking). Edge weights: correlation of the top-k overlap with the summed importance of the "
        "masked lower neurons (negative = faithful)."
    )
    with st.spinner("Reading the evaluations…"):
        rows = _read(ctx.model, ctx.params)
    if not rows:
        st.info(f"No evaluations of {ctx.model} in the store yet. Run "
                f"`neurflow evaluate --model {ctx.model} --classes all --out report/`, then reload this page.",
                icon="ℹ️")  # fmt: skip
        return
    classes = sorted({int(r["class_index"]) for r in rows})
    choice = url.selectbox("Class", [ALL] + classes, key="eval_class", parse=int,
                           format_func=lambda c: "all classes (mean)" if c == ALL else ctx.class_label(c))
    sel = rows if choice == ALL else [r for r in rows if int(r["class_index"]) == choice]
    title = "all classes (mean)" if choice == ALL else ctx.class_label(choice)

    import matplotlib.pyplot as plt

    left, right = st.columns(2)
    fig = fidelity_figure(sel, title)
    left.pyplot(fig)
    plt.close(fig)
    if any(r["kind"] == "edge_weight" for r in sel):
        fig = correlation_figure(sel, title)
        right.pyplot(fig)
        plt.close(fig)

    st.subheader("Class averages" if choice == ALL else "Numbers")
    table = summary_table(sel)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", column_config={
        "value": st.column_config.NumberColumn("value", format="%.3f"),
        "random_mean": st.column_config.NumberColumn("random", format="%.3f"),
        "baseline": st.column_config.NumberColumn("baseline", format="%.3f"),
        "size": st.column_config.NumberColumn("set size", format="%.1f"),
    })  # fmt: skip
    with st.expander(f"every stored row ({len(sel)})"):
        st.dataframe(pd.DataFrame(sel), hide_index=True, width="stretch")
