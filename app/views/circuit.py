"""Circuit of a class: the layered graph of groups (GROUP_FEEDS) or of neurons (FEEDS), pruned in
the store, and the crops behind a selected group or neuron."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from app import data
from app.graphs import GEdge, GNode, layered_figure
from app.state import UrlState
from app.text import md_text, plot_text
from app.views.common import Context, image_row, nav_button
from ingest.store.uids import short_group, short_neuron

MEMBER_COLUMNS = 3
USED_BY_SHOWN = 12  # class names listed in the sentence
USED_BY_ROWS = 100  # rows of the table (the reverse lookup on the Compare page pages through all)
LEVELS = {"group": "Groups (GROUP_FEEDS)", "neuron": "Neurons (FEEDS)"}


def _clicked(chart_key: str) -> str | None:
    """The node id clicked in the chart of the previous run, once per click."""
    event = st.session_state.get(chart_key)
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    ids = [p.get("customdata") for p in points if isinstance(p, dict) and p.get("customdata")]
    node = ids[-1] if ids else None
    if isinstance(node, list):
        node = node[0] if node else None
    last_key = chart_key + ":applied"
    if node is None or st.session_state.get(last_key) == node:
        return None
    st.session_state[last_key] = node
    return node


def render(url: UrlState, ctx: Context) -> None:
    st.header("Circuit of a class")
    names = ctx.class_names
    if not names:
        st.info("This model has no classes in the store.")
        return
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    cls = url.selectbox("Class", list(names), key="class", parse=int, container=c1, format_func=ctx.class_label)
    level = url.radio("Level", list(LEVELS), key="level", container=c2, horizontal=True, format_func=LEVELS.get)
    frac = url.slider("Min |weight| (share of the layer's strongest)", key="w", min_value=0.0, max_value=1.0,
                      default=0.05, step=0.01, container=c3)
    top_k = url.number("Top-k inputs per node", key="k", min_value=1, max_value=64, default=3 if level == "neuron" else 4,
                       container=c4)
    info = data.app_query("circuit_info", model=ctx.model, class_index=cls, params=ctx.params)
    if not info:
        ctx.missing_set_message([cls])
        return
    i = info[0]
    st.caption(
        f"Circuit {md_text(i['circuit'])} · tau {i['tau']}, k {i['k']}, IG steps {i['ig_steps']} · {i['neurons']} neurons, "
        f"{i['feeds']} FEEDS, {i['concepts']} concepts, {i['groups']} groups, {i['group_feeds']} GROUP_FEEDS · "
        f"completed {str(i['completed_at'])[:19].replace('T', ' ')} UTC"
    )
    if level == "group":
        _groups(url, ctx, cls, frac, top_k)
    else:
        _neurons(url, ctx, cls, frac, top_k)


# --------------------------------------------------------------------------- group level
def _groups(url: UrlState, ctx: Context, cls: int, frac: float, top_k: int) -> None:
    with st.spinner("Reading the pruned group graph…"):
        groups = data.app_query("groups", model=ctx.model, class_index=cls, params=ctx.params)
        edges = data.app_query("group_edges", model=ctx.model, class_index=cls, params=ctx.params,
                               min_frac=frac, top_k=top_k, limit=data.MAX_EDGES)
    if not groups:
        st.info("This circuit has no groups.")
        return
    by_uid = {g["uid"]: g for g in groups}
    shown = {e["lower"] for e in edges} | {e["upper"] for e in edges} | {g["uid"] for g in groups if g["depth"] == 0}
    chart_key = f"group_graph_{cls}"
    clicked = _clicked(chart_key)
    if clicked in by_uid:
        st.session_state["w:group"] = short_group(clicked)
    options = [short_group(g["uid"]) for g in groups]
    label_of = {short_group(g["uid"]): g for g in groups}

    def fmt(s: str) -> str:
        g = label_of[s]
        return f"{g['layer']} · g{g['index']} · {g['size']} concept{'' if g['size'] == 1 else 's'}" + (f" · {g['label']}" if g.get("label") else "")

    first_inner = next((short_group(g["uid"]) for g in groups if g["depth"] > 0), options[0])
    picked = url.selectbox("Group (or click a node)", options, key="group", format_func=fmt, default=first_inner)
    picked_uid = next(g["uid"] for g in groups if short_group(g["uid"]) == picked)
    nodes = [
        # labels and layer names are data: escaped, so that plotly's HTML subset (links, styles) stays text
        GNode(id=g["uid"], depth=g["depth"], label=f"g{g['index']}" + (f" {plot_text(g['label'])}" if g.get("label") else ""),
              short=f"g{g['index']}", label_inside=False,
              hover=f"{plot_text(g['layer'])} g{g['index']}<br>{g['size']} concepts" + (f"<br>{plot_text(g['label'])}" if g.get("label") else ""),
              size=12 + 3 * math.sqrt(max(1, g["size"] or 1)), order=g["index"])
        for g in groups if g["uid"] in shown or g["uid"] == picked_uid
    ]  # fmt: skip
    gedges = [GEdge(lower=e["lower"], upper=e["upper"], weight=e["weight"] / (e["top"] or 1.0),
                    hover=f"{plot_text(short_group(e['lower']))} → {plot_text(short_group(e['upper']))}<br>W = {e['weight']:.4g}"
                          f"<br>{abs(e['weight']) / (e['top'] or 1.0):.2f} of the layer's strongest") for e in edges]
    fig = layered_figure(nodes, gedges, layer_names=ctx.layer_names, selected=picked_uid, weight_name="|W|/layer max")
    st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode="points", config={"displaylogo": False})
    hidden = len(groups) - len(nodes)
    st.caption(f"{len(nodes)} groups, {len(edges)} GROUP_FEEDS edges drawn (|W| ≥ {frac:.2f} × the strongest into "
               f"the same layer, top {top_k} inputs per group){f'; {hidden} groups without a kept edge hidden' if hidden > 0 else ''}. "
               "Edge width and colour: |W| relative to the layer's strongest; red = negative." + _unlabelled(fig))
    _group_members(url, ctx, picked_uid, by_uid[picked_uid])


def _unlabelled(fig) -> str:
    """A sentence for the caption when some rows were too dense to label."""
    n = (fig.layout.meta or {}).get("unlabelled", 0)
    return f" {n} nodes in rows too dense to label show their name on hover." if n else ""


def _group_members(url: UrlState, ctx: Context, uid: str, g: dict[str, Any]) -> None:
    st.subheader(f"{md_text(g['layer'])} · group {g['index']}")
    if g.get("label"):
        st.text(f"Label: {g['label']}")  # plain text, never Markdown: labels come from an LLM or a person
    members = data.app_query("group_members", group=uid)
    if not members:
        st.caption("no member concepts")
        return
    n = url.slider("Concepts to show", key="n", min_value=1, max_value=max(1, len(members)),
                   default=min(12, len(members)), step=1) if len(members) > 1 else 1
    st.caption(f"{len(members)} member concepts (neuron channel · concept), strongest mean activation first; "
               "each with its representative crops.")
    shown = members[:n]
    for start in range(0, len(shown), MEMBER_COLUMNS):  # the graph is full width: members in a grid below it
        for col, m in zip(st.columns(MEMBER_COLUMNS), shown[start : start + MEMBER_COLUMNS]):
            col.markdown(f"**#{m['channel']}** · concept {m['concept']} · {m['size']} crops · mean act {m['mean_activation']:.3g}")
            image_row(m["thumbnails"], width=52, container=col)


# --------------------------------------------------------------------------- neuron level
def _neurons(url: UrlState, ctx: Context, cls: int, frac: float, top_k: int) -> None:
    depths = [row["depth"] for row in ctx.layers]
    names = ctx.layer_names
    deepest = url.selectbox("Down to layer", depths[1:] or depths, key="to", parse=int,
                            default=depths[-1] if depths else 0, format_func=lambda d: f"{names.get(d, d)} (depth {d})")
    with st.spinner("Reading the pruned neuron graph…"):
        edges = data.app_query("neuron_edges", model=ctx.model, class_index=cls, params=ctx.params, min_frac=frac,
                               top_k=top_k, max_depth=deepest - 1, limit=data.MAX_EDGES)
    nodes: dict[str, GNode] = {}
    for e in edges:
        for end in ("lower", "upper"):
            uid = e[end]
            if uid not in nodes:
                layer, depth, ch = e[f"{end}_layer"], e[f"{end}_depth"], e[f"{end}_channel"]
                nodes[uid] = GNode(id=uid, depth=depth, label=str(ch), hover=f"{plot_text(layer)} #{ch}", order=ch,
                                   size=24 if depth == 0 else 20)
    if not nodes:
        st.info("No FEEDS edge passes the filters; lower the weight threshold.")
        return
    chart_key = f"neuron_graph_{cls}"
    clicked = _clicked(chart_key)
    if clicked in nodes:
        st.session_state["w:neuron"] = short_neuron(clicked)
    order = sorted(nodes.values(), key=lambda n: (n.depth, n.order))
    options = [short_neuron(n.id) for n in order]
    uid_of = {short_neuron(n.id): n.id for n in order}
    picked = url.selectbox("Neuron (or click a node)", options, key="neuron", format_func=lambda s: s.replace("/", " #"))
    gedges = [GEdge(lower=e["lower"], upper=e["upper"], weight=e["weight"] / (e["top"] or 1.0),
                    hover=f"{plot_text(short_neuron(e['lower']))} → {plot_text(short_neuron(e['upper']))}<br>importance {e['weight']:.4g} (rank {e['rank']})"
                          f"<br>{e['weight'] / (e['top'] or 1.0):.2f} of the layer's largest")
              for e in edges]  # fmt: skip
    fig = layered_figure(list(nodes.values()), gedges, layer_names=names, selected=uid_of[picked],
                         weight_name="importance/layer max")
    st.plotly_chart(fig, key=chart_key, on_select="rerun", selection_mode="points", config={"displaylogo": False})
    st.caption(f"{len(nodes)} neurons, {len(edges)} FEEDS edges drawn (importance ≥ {frac:.2f} × the largest into the "
               f"same layer, the top {top_k} "
               f"core neurons of each neuron{'; capped' if len(edges) >= data.MAX_EDGES else ''}). Labels: channel numbers."
               + _unlabelled(fig))
    _neuron_detail(ctx, cls, picked)


def _thumbnails(concept: dict[str, Any]) -> list[str | None]:
    """Thumbnail paths of a `neuron_concepts` row, in rank order (exemplar maps, or the older list)."""
    if "exemplars" in concept:
        return [x.get("thumbnail") for x in concept["exemplars"] or [] if x]
    return list(concept.get("thumbnails") or [])


def _neuron_detail(ctx: Context, cls: int, picked: str) -> None:
    layer, channel = picked.rsplit("/", 1)
    channel = int(channel)
    st.subheader(f"{md_text(layer)} · neuron #{channel}")
    left, right = st.columns([3, 2])
    concepts = data.lib("neuron_concepts", model=ctx.model, class_index=cls, params=ctx.params, layer=layer, channel=channel)
    if concepts:
        for k in concepts:
            grp = f" · group {md_text(short_group(k['group']))}" if k.get("group") else ""
            left.markdown(f"**concept {k['index']}** · {k['size']} crops · mean act {k['mean_activation']:.3g}{grp}")
            if k.get("group") and k.get("label"):
                left.text(f"Group label: {k['label']}")  # plain text, never Markdown
            image_row(_thumbnails(k), width=52, container=left)
    else:
        left.caption("No concepts: the lowest analysed layer's neurons have no layer below to explain them.")
    used = data.lib("reverse_lookup", model=ctx.model, params=ctx.params, layer=layer, channel=channel, limit=USED_BY_ROWS)
    if used:
        total = int(used[0].get("total") or len(used))
        right.markdown(f"**Critical for {total} of {len(ctx.class_names)} classes:** "
                       + ", ".join(ctx.class_md(r["class_index"]) for r in used[:USED_BY_SHOWN])
                       + (f" and {total - USED_BY_SHOWN} more" if total > USED_BY_SHOWN else "")
                       + (f" (the table lists the first {len(used)}; the Compare page's reverse lookup pages through all)"
                          if total > len(used) else ""))
        right.dataframe(pd.DataFrame(used)[["class_index", "class_name", "feeds_up"]], hide_index=True, width="stretch",
                        height=min(400, 40 + 35 * len(used)))
    nav_button("Reverse lookup on the Compare page", "compare", key="to_reverse", container=right, rl_layer=layer,
               rl_channel=channel, view="reverse")
