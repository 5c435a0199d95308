"""Compare classes: shared and unique critical neurons per layer with Jaccard, the diff circuit,
the class-by-class similarity heatmap, hub neurons and the reverse lookup of a neuron.

Built to stay readable and quick at 1,000 classes (ImageNet): above `ALL_SECTIONS_MAX` classes
the page shows one section at a time (a page run then reads only what that section needs); the
heatmap puts classes in cluster order and shows one block of `HEATMAP_PAGE` classes at a time,
narrowed by a name filter; the hub table names the first classes of each hub and counts the rest;
the reverse lookup of a hub shared by hundreds of classes is paged."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

import pandas as pd
import streamlit as st

from app import data
from app.graphs import DIFF_COLOURS, DIFF_ORDER, GEdge, GNode, bar_figure, fitted_range, heatmap_figure, layered_figure
from app.state import UrlState
from app.text import md_text, plot_text
from app.views.common import Context, nav_button
from ingest.store.uids import neuron_uid

SECTIONS = {"overlap": "Shared neurons and diff", "similarity": "Similarity heatmap", "hubs": "Hub neurons",
            "reverse": "Reverse lookup"}  # fmt: skip
ALL_SECTIONS_MAX = 40  # up to this many classes every section is on one page ("everything")
HEATMAP_PAGE = 40  # classes per heatmap block (cluster order)
TOP_PAIRS = 10  # most similar pairs listed under the heatmap
HUB_CLASSES_SHOWN = 8  # class names per hub row; the rest are counted
REVERSE_PAGE = 50  # reverse-lookup rows per page


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def overlap_table(sets: dict[int, dict[int, set[int]]], classes: list[int], layer_names: dict[int, str],
                  label) -> pd.DataFrame:
    """Per layer (class logits left out): sizes, shared by all, unique to each, Jaccard."""
    rows = []
    depths = sorted({d for per in sets.values() for d in per if d > 0})
    for d in depths:
        per = {c: sets.get(c, {}).get(d, set()) for c in classes}
        union = set().union(*per.values())
        inter = set.intersection(*per.values()) if per else set()
        row: dict[str, Any] = {"layer": layer_names.get(d, str(d)), "depth": d}
        for c in classes:
            row[f"|{label(c)}|"] = len(per[c])
        row["shared by all"] = len(inter)
        for c in classes:
            others = set().union(*(per[o] for o in classes if o != c))
            row[f"only {label(c)}"] = len(per[c] - others)
        row["Jaccard"] = round(len(inter) / len(union), 4) if union else 0.0
        if len(classes) > 2:
            row["mean pairwise Jaccard"] = round(
                sum(jaccard(per[a], per[b]) for a, b in combinations(classes, 2)) / (len(classes) * (len(classes) - 1) / 2), 4)
        row["shared channels"] = ", ".join(str(x) for x in sorted(inter))
        rows.append(row)
    return pd.DataFrame(rows)


def render(url: UrlState, ctx: Context) -> None:
    st.header("Compare classes")
    names = ctx.class_names
    options = list(names)
    if len(options) < 2:
        st.info("Comparing needs circuits of at least two classes.")
        return
    small = len(options) <= ALL_SECTIONS_MAX
    views = (["all"] if small else []) + list(SECTIONS)
    view = url.radio("Show", views, key="view", horizontal=True, label_visibility="collapsed",
                     format_func=lambda v: "Everything" if v == "all" else SECTIONS[v])
    chosen = url.multiselect("Classes (pick two or more)", options, key="classes", default=options[:2],
                             format_func=ctx.class_label)
    if view in ("all", "overlap"):
        if len(chosen) < 2:
            st.info("Pick at least two classes to compare.")
        else:
            _overlap(ctx, chosen)
            _diff(url, ctx, chosen)
    if view in ("all", "similarity"):
        _heatmap(url, ctx, chosen)
    if view in ("all", "hubs"):
        _hubs(url, ctx)
    if view in ("all", "reverse"):
        _reverse(url, ctx)


# --------------------------------------------------------------------------- overlap
def _overlap(ctx: Context, chosen: list[int]) -> None:
    st.subheader("Shared and unique critical neurons")
    with st.spinner("Comparing circuits…"):
        rows = data.app_query("critical_sets", model=ctx.model, classes=chosen, params=ctx.params)
    sets: dict[int, dict[int, set[int]]] = {}
    for r in rows:
        sets.setdefault(r["class_index"], {})[r["depth"]] = set(r["channels"])
    ctx.missing_set_message([c for c in chosen if c not in sets])
    present = [c for c in chosen if c in sets]
    if len(present) < 2:
        return
    short = {c: ctx.class_names.get(c, str(c)) for c in present}
    table = overlap_table(sets, present, ctx.layer_names, lambda c: short[c])
    st.dataframe(table, hide_index=True, width="stretch")
    if not table.empty:
        if len(present) == 2:
            series = {"Jaccard": list(table["Jaccard"])}
        else:
            series = {"Jaccard (all)": list(table["Jaccard"]), "mean pairwise": list(table["mean pairwise Jaccard"])}
        st.plotly_chart(bar_figure(list(table["layer"]), series, y_title="Jaccard", height=240),
                        config={"displaylogo": False}, key="overlap_bars")


# --------------------------------------------------------------------------- diff
def _diff(url: UrlState, ctx: Context, chosen: list[int]) -> None:
    st.subheader("Diff circuit")
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    a = url.selectbox("A", chosen, key="a", parse=int, default=chosen[0], container=c1, format_func=ctx.class_label)
    b_opts = [c for c in chosen if c != a]
    b = url.selectbox("B", b_opts, key="b", parse=int, default=b_opts[0], container=c2, format_func=ctx.class_label)
    frac = url.slider("Min importance (share of the layer's largest)", key="dw", min_value=0.0, max_value=1.0, default=0.05,
                      step=0.01, container=c3)
    top_k = url.number("Top-k", key="dk", min_value=1, max_value=64, default=2, container=c4)
    deepest = max((row["depth"] for row in ctx.layers), default=0)
    with st.spinner("Reading both circuits…"):
        # every item (limit null): the colours of the drawn nodes and edges come from the full circuits
        diff = data.lib("circuit_diff", model=ctx.model, class_a=a, class_b=b, params_a=ctx.params, params_b=ctx.params,
                        limit=None)
        ea = data.app_query("neuron_edges", model=ctx.model, class_index=a, params=ctx.params, min_frac=frac,
                            top_k=top_k, max_depth=deepest, limit=data.MAX_EDGES)
        eb = data.app_query("neuron_edges", model=ctx.model, class_index=b, params=ctx.params, min_frac=frac,
                            top_k=top_k, max_depth=deepest, limit=data.MAX_EDGES)
    if not diff:
        st.info("The diff needs both classes under this parameter set.")
        return
    side_of_feed: dict[str, str] = {}
    side_of_neuron: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in diff:
        counts[(r["kind"], r["side"])] = r["count"]
        for item in r["items"]:
            (side_of_feed if r["kind"] == "feeds" else side_of_neuron)[item] = r["side"]
    la, lb = ctx.class_md(a), ctx.class_md(b)
    m = st.columns(6)
    m[0].metric("neurons shared", counts.get(("neuron", "both"), 0))
    m[1].metric("only A", counts.get(("neuron", "only_a"), 0), help=la)
    m[2].metric("only B", counts.get(("neuron", "only_b"), 0), help=lb)
    m[3].metric("FEEDS shared", counts.get(("feeds", "both"), 0))
    m[4].metric("FEEDS only A", counts.get(("feeds", "only_a"), 0))
    m[5].metric("FEEDS only B", counts.get(("feeds", "only_b"), 0))

    edges: dict[tuple[str, str], GEdge] = {}
    nodes: dict[str, GNode] = {}
    for rows in (ea, eb):
        for e in rows:
            key = (e["lower"], e["upper"])
            side = side_of_feed.get(f"{e['lower']}->{e['upper']}", "both")
            w = e["weight"] / (e["top"] or 1.0)
            old = edges.get(key)
            if old is None or w > old.weight:
                edges[key] = GEdge(lower=e["lower"], upper=e["upper"], weight=w, category=side,
                                   hover=f"{plot_text(e['lower_layer'])} #{e['lower_channel']} → {plot_text(e['upper_layer'])} #{e['upper_channel']}"
                                         f"<br>{side.replace('_', ' ')}<br>importance {e['weight']:.4g} ({w:.2f} of the layer's largest)")
            for end in ("lower", "upper"):
                uid = e[end]
                if uid not in nodes:
                    nside = side_of_neuron.get(uid, "both")
                    nodes[uid] = GNode(id=uid, depth=e[f"{end}_depth"], label=str(e[f"{end}_channel"]), category=nside,
                                       hover=f"{plot_text(e[f'{end}_layer'])} #{e[f'{end}_channel']}<br>{nside.replace('_', ' ')}",
                                       order=e[f"{end}_channel"], size=24 if e[f"{end}_depth"] == 0 else 20)
    if not edges:
        st.info("No FEEDS edge passes the filters.")
        return
    fig = layered_figure(list(nodes.values()), list(edges.values()), layer_names=ctx.layer_names,
                         node_colours=DIFF_COLOURS, weight_name="importance share", category_order=DIFF_ORDER)
    st.plotly_chart(fig, key="diff_graph", config={"displaylogo": False})
    st.caption(f"A = {la} (blue), B = {lb} (orange), shared = purple. The union of both circuits pruned to the top {top_k} "
               f"core neurons per neuron with importance ≥ {frac:.2f} × the layer's largest; colours come from the full circuits.")


# --------------------------------------------------------------------------- heatmap
def name_filter(names: dict[int, str], text: str) -> set[int]:
    """Classes whose index or name contains any of the comma-separated terms (case-insensitive)."""
    terms = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not terms:
        return set(names)
    return {c for c, n in names.items() if any(t in f"{c} · {n}".lower() for t in terms)}


def _heatmap(url: UrlState, ctx: Context, chosen: list[int]) -> None:
    st.subheader("Class-by-class similarity")
    layer_opts = [row["name"] for row in ctx.layers if row["depth"] > 0]
    if not layer_opts:
        return
    c1, c2, c3, c4 = st.columns([2, 3, 2, 1])
    layer = url.selectbox("Layer", layer_opts, key="layer", default=layer_opts[len(layer_opts) // 2], container=c1)
    with st.spinner("Reading every class's critical neurons…"):
        sim = data.similarity(ctx.model, layer, ctx.params)
    classes, matrix = sim["classes"], sim["matrix"]
    if len(classes) < 2:
        st.caption("fewer than two circuits under this parameter set")
        return
    if len(ctx.class_names) <= ALL_SECTIONS_MAX:
        ctx.missing_set_message(ctx.classes_without_set(sorted(ctx.class_names)))
    text = url.text_input("Classes whose name contains (comma-separated)", key="hm_q", default="", container=c2,
                          placeholder="e.g. terrier, retriever")
    ordering = url.radio("Order", ["cluster", "index"], key="hm_order", container=c3, horizontal=True,
                         format_func={"cluster": "similar together", "index": "class index"}.get)
    keep = name_filter({c: ctx.class_names.get(c, str(c)) for c in classes}, text)
    order = sim["order"] if ordering == "cluster" else list(range(len(classes)))
    listed = [i for i in order if classes[i] in keep]  # positions in the matrix
    if not listed:
        st.info(f"No class name contains {md_text(repr(text))}.")  # the link's text: never Markdown
        return
    pages = (len(listed) + HEATMAP_PAGE - 1) // HEATMAP_PAGE
    shown = listed
    if pages > 1:  # one block of the (clustered) order at a time; by default the block of the first picked class
        first = next((k // HEATMAP_PAGE + 1 for k, i in enumerate(listed) if chosen and classes[i] == chosen[0]), 1)
        at = url.number(f"Block (of {pages})", key="hm_page", min_value=1, max_value=pages, default=first, container=c4)
        shown = listed[(at - 1) * HEATMAP_PAGE : at * HEATMAP_PAGE]
    sub = matrix[[[i] for i in shown], shown]
    lo, hi = fitted_range(sub)
    labels = [ctx.class_label(classes[i]) + (" ◀" if classes[i] in chosen else "") for i in shown]
    st.plotly_chart(heatmap_figure(labels, sub, zrange=(lo, hi)), key="heatmap", config={"displaylogo": False})
    scope = (f"{len(shown)} of {len(listed)} classes" + (f" matching {md_text(repr(text))}" if text.strip() else "")
             + (f" (block {at} of {pages})" if pages > 1 else ""))
    st.caption(f"Jaccard index of the critical neurons of layer {md_text(layer)}, {scope}, "
               f"{'similar classes next to each other (average-linkage clustering of 1 − Jaccard)' if ordering == 'cluster' else 'in class order'}. "
               f"Colour range fitted to the cells shown: {lo:.2f} (dark) to {hi:.2f} (yellow); the diagonal "
               "(a class against itself) is left blank; ◀ = picked classes.")
    _top_pairs(ctx, classes, matrix, listed)


def _top_pairs(ctx: Context, classes: list[int], matrix, listed: list[int]) -> None:
    """The most similar pairs among the listed classes (every block, not only the one shown)."""

    if len(listed) < 3:
        return
    sub = matrix[np.ix_(listed, listed)]
    iu = np.triu_indices(len(listed), k=1)
    vals = sub[iu]
    best = np.argsort(-vals, kind="stable")[:TOP_PAIRS]
    rows = [{"class A": ctx.class_label(classes[listed[iu[0][k]]]), "class B": ctx.class_label(classes[listed[iu[1][k]]]),
             "Jaccard": round(float(vals[k]), 4)} for k in best]  # fmt: skip
    with st.expander(f"The {len(rows)} most similar pairs among these {len(listed)} classes"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


# --------------------------------------------------------------------------- hubs and reverse lookup
def used_by(ctx: Context, class_indices: list[int], shown: int = HUB_CLASSES_SHOWN) -> str:
    """The first `shown` class names of a hub and how many more (a hub of 900 classes stays one line)."""
    names = [ctx.class_names.get(c, str(c)) for c in class_indices[:shown]]
    more = len(class_indices) - shown
    return ", ".join(names) + (f" … and {more} more" if more > 0 else "")


def _hubs(url: UrlState, ctx: Context) -> None:
    st.subheader("Hub neurons")
    c1, c2, c3 = st.columns([3, 1, 1])
    layers = ["(all layers)"] + [row["name"] for row in ctx.layers if row["depth"] > 0]
    hub_layer = url.selectbox("Layer of the hubs", layers, key="hub_layer", container=c1)
    limit = url.number("How many", key="hubs", min_value=1, max_value=200, default=10, container=c2)
    start = url.number("From rank", key="hub_from", min_value=1, max_value=1_000_000, default=1, container=c3)
    rows = data.lib("hub_neurons", model=ctx.model, params=ctx.params, limit=limit, skip=start - 1,
                    layer=None if hub_layer == layers[0] else hub_layer)
    if not rows:
        st.caption("no hub neurons")
        return
    ranked = "importance" in rows[0]
    df = pd.DataFrame([{
        "rank": start + i, "neuron": f"{r['layer']} #{r['channel']}", "classes": r["classes"],
        **({"importance": r["importance"]} if ranked else {}),
        "used by": used_by(ctx, r["class_indices"]),
    } for i, r in enumerate(rows)])  # fmt: skip
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "classes": st.column_config.NumberColumn("classes", help="classes whose circuit includes the neuron"),
        "importance": st.column_config.NumberColumn("importance", format="%.3g",
                                                    help="its importance summed over those circuits"),
    })  # fmt: skip
    n = len(ctx.class_names)
    st.caption(f"Ranked by **classes**: how many of the {n} classes' circuits include the neuron"
               + ("; ties (e.g. neurons every class shares) by **importance**: the neuron's importance to the layer "
                  "above (its FEEDS importances I_u(v), summed) summed over those circuits, so the neuron the classes "
                  "lean on most comes first." if ranked else "."))


def _reverse(url: UrlState, ctx: Context) -> None:
    st.subheader("Reverse lookup: which classes and groups use a neuron")
    layer_opts = [row["name"] for row in ctx.layers]
    if not layer_opts:
        return
    hub = data.lib("hub_neurons", model=ctx.model, params=ctx.params, limit=1)
    c1, c2, c3 = st.columns([3, 1, 1])
    layer = url.selectbox("Neuron layer", layer_opts, key="rl_layer", container=c1,
                          default=hub[0]["layer"] if hub else layer_opts[-1])
    channels = next((row["channels"] for row in ctx.layers if row["name"] == layer), None) or 100000
    channel = url.number("Channel", key="rl_channel", min_value=0, max_value=int(channels) - 1,
                         default=hub[0]["channel"] if hub and hub[0]["layer"] == layer else 0, container=c2)
    first = data.lib("reverse_lookup", model=ctx.model, params=ctx.params, layer=layer, channel=channel, skip=0,
                     limit=REVERSE_PAGE)
    if not first:
        st.caption(f"{md_text(layer)} #{channel} is critical for no class.")
        return
    total = int(first[0]["total"])
    pages = (total + REVERSE_PAGE - 1) // REVERSE_PAGE
    at = url.number(f"Page (of {pages})", key="rl_page", min_value=1, max_value=pages, default=1, container=c3) if pages > 1 else 1
    page_rows = first if at == 1 else data.lib("reverse_lookup", model=ctx.model, params=ctx.params, layer=layer,
                                               channel=channel, skip=(at - 1) * REVERSE_PAGE, limit=REVERSE_PAGE)
    groups = data.app_query("neuron_groups", circuits=[r["circuit"] for r in page_rows], neuron=neuron_uid(ctx.model, layer, channel))
    by_class: dict[int, list[str]] = {}
    for g in groups:
        if g.get("group"):
            text = f"g{g['group_index']}" + (f" ({g['label']})" if g.get("label") else "") + f" ← concept {g['concept']}"
            by_class.setdefault(g["class_index"], []).append(text)
    df = pd.DataFrame([{
        "class": ctx.class_label(r["class_index"]), "depth": r["depth"], "feeds up": r["feeds_up"],
        "groups (via its concepts)": "; ".join(by_class.get(r["class_index"], [])) or "–", "circuit": r["circuit"],
    } for r in page_rows])  # fmt: skip
    st.markdown(f"**{md_text(layer)} #{channel}** is critical for **{total}** of {len(ctx.class_names)} classes"
                + (f" (rows {(at - 1) * REVERSE_PAGE + 1}-{(at - 1) * REVERSE_PAGE + len(page_rows)}, page {at} of {pages})."
                   if pages > 1 else "."))
    st.dataframe(df, hide_index=True, width="stretch")
    cols = st.columns(min(6, len(page_rows)))
    for col, r in zip(cols, page_rows[:6]):
        nav_button(f"Circuit of {ctx.class_names.get(r['class_index'], r['class_index'])}", "circuit",
                   key=f"rl_open_{r['class_index']}", container=col, **{"class": r["class_index"], "level": "neuron",
                                                                        "neuron": f"{layer}/{channel}"})
