"""Faithfulness: the stored `Evaluation` numbers of the model's circuits (written by `neurflow evaluate`).

For one class or averaged over the classes: per analysed layer, class accuracy with the critical
set masked / retained against random sets of the same size (and the ratios the paper's claims are
about); per layer pair, the optimality of core sets and the correlation of the edge weights with
what masking does.  Tables are built here, one row per layer or layer pair, so that a number a
kind does not have never shows up as an empty `None` cell (the stored rows keep every field
for every kind); a missing number reads "–" and the caption says why.  Plots are plotly, full
width, with the layer names on a readable axis.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app import data
from app.state import UrlState
from app.text import md_text, plot_text
from app.views.common import Context
from ingest.store.errors import StoreError

ALL = -1
MIN_RANDOM_DROP = 1e-3  # a random drop / accuracy below this counts as this in a ratio (as bench/demo_selectivity.py)
DASH = "–"
RATIO_CAP = 100.0  # ratios above this are shown as "≥ 100×": the random side is (nearly) zero there


def _read(model: str, params: str | None) -> list[dict]:
    try:
        return data.evaluations(model, params)
    except StoreError as exc:  # a store that never saw an Evaluation may not know the label
        if "Evaluation" in str(exc) or "HAS_EVALUATION" in str(exc):
            return []
        raise


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
    return sum(vals) / len(vals) if vals else None


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    if x is None:
        return DASH
    text = fmt.format(x)
    return text.replace("-", "", 1) if text.lstrip("-+").strip("0.") == "" else text  # no "-0.000"


def _ratio(x: float | None) -> str:
    if x is None:
        return DASH
    return f"≥ {RATIO_CAP:g}×" if x >= RATIO_CAP else f"{x:.1f}×"


def layers_top_down(rows: list[dict]) -> list[tuple[int, str]]:
    return sorted({(int(r["depth"]), r["layer"]) for r in rows})


def fidelity_table(rows: list[dict], channels: dict[str, int], scope: str = "single") -> pd.DataFrame:
    """One row per masked layer (top first): critical set size over the layer's channels, the
    accuracy drop with the critical set masked and with random sets of its size and their ratio,
    the accuracy kept when only the critical set is retained, against random sets, and that ratio.
    Means over the classes in `rows`.  Every cell is text: numbers, or "–" where none was stored."""
    fid = [r for r in rows if r["kind"] == "fidelity" and r["scope"] == scope]
    out = []
    for depth, layer in layers_top_down(fid):
        at = [r for r in fid if r["layer"] == layer]
        mask = [r for r in at if r["mode"] == "mask"]
        keep = [r for r in at if r["mode"] == "retain"]
        base = _mean(at, "baseline")
        drop = None if base is None or _mean(mask, "value") is None else base - _mean(mask, "value")
        drop_rnd = None if base is None or _mean(mask, "random_mean") is None else base - _mean(mask, "random_mean")
        acc, acc_rnd = _mean(keep, "value"), _mean(keep, "random_mean")
        size = _mean(at, "size")
        out.append({
            "layer": layer,
            "critical / channels": f"{_num(size, '{:.1f}')} / {channels.get(layer, '?')}",
            "mask: drop core": _num(drop), "mask: drop random": _num(drop_rnd),
            "mask ratio": _ratio(None if drop is None or drop_rnd is None else drop / max(drop_rnd, MIN_RANDOM_DROP)),
            "retain: acc core": _num(acc), "retain: acc random": _num(acc_rnd),
            "retain ratio": _ratio(None if acc is None or acc_rnd is None else acc / max(acc_rnd, MIN_RANDOM_DROP)),
            "classes": str(len({r["class_index"] for r in at})),
        })  # fmt: skip
    return pd.DataFrame(out)


def pair_table(rows: list[dict]) -> pd.DataFrame:
    """One row per layer pair (upper <- masked lower, top first): optimality (share of random sets
    the core set beats; top-k overlap after masking the core set / random sets) and the four
    edge-weight correlations (Pearson / Spearman of the overlap with the sum / mean of the masked
    importances)."""
    rel = [r for r in rows if r["kind"] in ("optimality", "edge_weight")]
    out = []
    for depth, layer in layers_top_down(rel):
        at = [r for r in rel if r["layer"] == layer]
        lower = next((r.get("lower") for r in at if r.get("lower")), "")
        opt = [r for r in at if r["kind"] == "optimality"]
        row = {"layer pair": f"{layer} ← {lower}" if lower else layer,
               "optimality: random sets beaten": _num(_mean(opt, "value"), "{:.2f}"),
               "overlap core / random": f"{_num(_mean(opt, 'baseline'), '{:.2f}')} / {_num(_mean(opt, 'random_mean'), '{:.2f}')}"}
        for agg in ("sum", "mean"):
            for method in ("pearson", "spearman"):
                sel = [r for r in at if r["kind"] == "edge_weight" and r["mode"] == agg and r["scope"] == method]
                row[f"{method.capitalize()}, {agg}"] = _num(_mean(sel, "value"), "{:+.2f}")
        out.append(row)
    return pd.DataFrame(out)


def fidelity_plot(rows: list[dict]) -> go.Figure:
    """Accuracy by masked layer (bottom layer left), core vs random, mask and retain side by side;
    solid = that layer alone, dashed = it and every analysed layer above."""
    fid = [r for r in rows if r["kind"] == "fidelity"]
    layers = [plot_text(name) for _, name in sorted(layers_top_down(fid), reverse=True)]  # data: escaped for plotly
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("masked: critical set zeroed", "retained: only the critical set kept"))
    colours = {"value": "#1f77b4", "random_mean": "#ff7f0e"}
    for col, mode in ((1, "mask"), (2, "retain")):
        for scope, dash in (("single", "solid"), ("multi", "dash")):
            sel = [r for r in fid if r["mode"] == mode and r["scope"] == scope]
            if not sel:
                continue
            for key, name in (("value", "critical set"), ("random_mean", "random sets, same size")):
                ys = [_mean([r for r in sel if plot_text(r["layer"]) == layer], key) for layer in layers]
                fig.add_trace(go.Scatter(
                    x=layers, y=ys, mode="lines+markers", line={"color": colours[key], "dash": dash, "width": 2.5},
                    marker={"size": 8}, name=f"{name} ({'this layer' if scope == 'single' else 'this layer and above'})",
                    legendgroup=f"{key}{scope}", showlegend=col == 1,
                    hovertemplate=f"{name}, {scope}<br>%{{x}}: accuracy %{{y:.3f}}<extra></extra>",
                ), row=1, col=col)  # fmt: skip
    base = _mean(fid, "baseline")
    if base is not None:  # a legend entry, not a text on the plot (it would sit on the random lines)
        for col in (1, 2):
            fig.add_trace(go.Scatter(x=layers, y=[base] * len(layers), mode="lines", name=f"unmasked model ({base:.3f})",
                                     line={"color": "#777777", "dash": "dot", "width": 1.5}, legendgroup="base",
                                     showlegend=col == 1, hoverinfo="skip"), row=1, col=col)
    fig.update_yaxes(title_text="class top-1 accuracy", range=[-0.03, 1.05], row=1, col=1, tickformat=".1f")
    fig.update_xaxes(title_text="masked layer (input side left)")
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10}, font={"size": 13},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0}, plot_bgcolor="white")
    fig.update_xaxes(showgrid=False, linecolor="#999")
    fig.update_yaxes(gridcolor="#eeeeee")
    return fig


def correlation_plot(rows: list[dict]) -> go.Figure:
    """Edge-weight fidelity per layer pair: correlation of the top-k overlap with the summed / mean
    importance of the masked neurons (negative = the weights say what matters)."""
    ew = [r for r in rows if r["kind"] == "edge_weight"]
    pairs = sorted(layers_top_down(ew), reverse=True)
    lower = {r["layer"]: r.get("lower") or "" for r in ew}
    labels = [plot_text(f"{name} ← {lower[name]}" if lower[name] else name) for _, name in pairs]  # data: escaped
    fig = go.Figure()
    for agg, colour in (("sum", "#1f77b4"), ("mean", "#d62728")):
        for method, dash in (("pearson", "solid"), ("spearman", "dash")):
            ys = [_mean([r for r in ew if r["layer"] == name and r["mode"] == agg and r["scope"] == method], "value")
                  for _, name in pairs]
            fig.add_trace(go.Scatter(x=labels, y=ys, mode="lines+markers", name=f"{method.capitalize()}, {agg} of importances",
                                     line={"color": colour, "dash": dash, "width": 2.5}, marker={"size": 8},
                                     hovertemplate=f"{method}, {agg}<br>%{{x}}: %{{y:+.2f}}<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#777777", "width": 1})
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10}, font={"size": 13}, plot_bgcolor="white",
                      title={"text": "edge weights: correlation with the top-k overlap after masking", "font": {"size": 14}},
                      yaxis={"title": "correlation", "range": [-1.05, 0.5], "gridcolor": "#eeeeee", "tickformat": ".1f"},
                      xaxis={"title": "layer pair (upper ← masked lower)"},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0})
    return fig


def stored_rows(rows: list[dict]) -> pd.DataFrame:
    """The stored rows for inspection: fields no row here has are left out, every cell is text
    (numbers to 4 significant digits) and a field one row lacks reads "–" (never None)."""
    df = pd.DataFrame(rows).dropna(axis=1, how="all")

    def cell(x: Any) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return DASH
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    return df.apply(lambda col: col.map(cell)) if not df.empty else df


def measured_with(rows: list[dict]) -> str:
    """How the shown numbers were measured (random draws, held-out images per class): the demo
    stores lighter evaluations than `neurflow evaluate`'s defaults, and a reader comparing pages
    with the README should see which."""
    fid = [r for r in rows if r["kind"] == "fidelity"]
    draws = sorted({int(r["draws"]) for r in fid if r.get("draws") is not None})
    images = sorted({int(r["n"]) for r in fid if r.get("n") is not None})
    if not fid:
        return "Measured settings: no fidelity rows."
    span = lambda v: str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"  # noqa: E731
    return (f"Fidelity measured with {span(draws) if draws else '?'} random draws on {span(images) if images else '?'} "
            f"held-out images per class ({len(fid)} rows); `neurflow evaluate` at its defaults uses 5 draws on 300 "
            "images and overwrites these.")


def render(url: UrlState, ctx: Context) -> None:
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
        st.info(f"No evaluations of {md_text(ctx.model)} in the store yet. Run "
                f"{md_text(f'neurflow evaluate --model {ctx.model} --classes all --out report/')}, then reload this page.",
                icon="ℹ️")  # fmt: skip
        return
    classes = sorted({int(r["class_index"]) for r in rows})
    choice = url.selectbox("Class", [ALL] + classes, key="eval_class", parse=int,
                           format_func=lambda c: f"all {len(classes)} classes (mean)" if c == ALL else ctx.class_label(c))
    sel = rows if choice == ALL else [r for r in rows if int(r["class_index"]) == choice]
    channels = {row["name"]: row["channels"] for row in ctx.layers}
    st.caption(measured_with(sel))
    base = _mean([r for r in sel if r["kind"] == "fidelity"], "baseline")

    st.subheader("Fidelity of the critical sets, per layer")
    if any(r["kind"] == "fidelity" for r in sel):
        st.plotly_chart(fidelity_plot(sel), key="fidelity_plot", config={"displaylogo": False})
        for scope, title in (("single", "that layer alone"), ("multi", "that layer and every analysed layer above it")):
            table = fidelity_table(sel, channels, scope)
            if not table.empty:
                st.markdown(f"**Masking {title}**")
                st.dataframe(table, hide_index=True, width="stretch")
        st.caption(f"Unmasked class accuracy {_num(base)}. Drop = unmasked accuracy − accuracy with the set masked; "
                   f"mask ratio = drop with the critical set / drop with random sets of the same size (a random drop "
                   f"below {MIN_RANDOM_DROP:g} counts as {MIN_RANDOM_DROP:g}); retain ratio = accuracy keeping only the "
                   f"critical set / keeping random sets (a random accuracy below {MIN_RANDOM_DROP:g} counts as "
                   f"{MIN_RANDOM_DROP:g}; ratios of {RATIO_CAP:g} or more show as ≥ {RATIO_CAP:g}×). Random numbers are "
                   "means over the draws; "
                   f"{DASH} = not measured.")
    else:
        st.caption("No fidelity numbers stored (evaluate with --kinds fidelity).")

    if any(r["kind"] in ("optimality", "edge_weight") for r in sel):
        st.subheader("Core sets and edge weights, per layer pair")
        if any(r["kind"] == "edge_weight" for r in sel):
            st.plotly_chart(correlation_plot(sel), key="correlation_plot", config={"displaylogo": False})
        st.dataframe(pair_table(sel), hide_index=True, width="stretch")
        st.caption("Optimality: share of random core-sized sets of the lower layer whose masking disturbs the upper "
                   "neuron's top-k crops less than masking its core set (1 = the core set beats them all); overlap = "
                   "top-k overlap after masking the core set / a random set. Correlations: of that overlap with the "
                   f"sum or the mean of the masked neurons' importances, over the sampled neurons ({DASH} = no value: "
                   "the overlap did not vary).")

    with st.expander(f"every stored row ({len(sel)})"):
        st.dataframe(stored_rows(sel), hide_index=True, width="stretch")
