"""Graph drawing without a browser library: layouts computed here, drawn as plotly figures.

- `layered_layout`: depth 0 (class logits) on top, each deeper layer one row below; the nodes of a
  row are ordered by the mean position of the nodes they feed (one barycentre sweep from the top),
  which removes most crossings of a circuit.
- `layered_figure`: nodes and weighted edges; edge width and colour follow |weight| (5 bins, one
  trace each, so a figure of a thousand edges is still a dozen traces), or a category colour
  (diff views: shared / only A / only B).  Labels never overlap (`label_plan`): a row's node
  spacing at the chart's drawn width decides, per row, whether labels sit inside the markers
  (short labels such as channel numbers), above them, alternately above and below, shortened
  (`GNode.short`), or only on hover; the selected node is always labelled.
- `result_figure`: the nodes and relationships of a console result, spring layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from app.text import no_server_paths, plot_text, server_roots

DIFF_COLOURS = {"both": "#7b5ea7", "only_a": "#1f77b4", "only_b": "#ff7f0e"}
DIFF_NAMES = {"both": "shared", "only_a": "only A", "only_b": "only B"}
DIFF_ORDER = {"only_a": 0, "both": 1, "only_b": 2}  # A left, shared in the middle, B right


@dataclass
class GNode:
    """A node; `label` and `hover` are plotly text (callers escape data in them with `plot_text`)."""

    id: str
    depth: int
    label: str
    hover: str = ""
    category: str = "node"  # colour group (legend entry)
    size: float = 14.0
    order: float = 0.0  # tie-break inside a layer (e.g. channel)
    short: str | None = None  # a shorter label for dense rows (e.g. "g3" for "g3 collar edges")
    label_inside: bool = True  # may the label sit inside the marker (short ids); False: beside it only


@dataclass
class GEdge:
    lower: str  # the edge runs lower -> upper (information flows up)
    upper: str
    weight: float
    category: str | None = None  # diff category; None: colour by weight
    hover: str = ""


@dataclass
class Layout:
    pos: dict[str, tuple[float, float]] = field(default_factory=dict)
    depths: list[int] = field(default_factory=list)


def _ink(colour: str) -> str:
    """Text colour readable on a marker of `colour` (#rrggbb): by its relative luminance."""
    try:
        r, g, b = (int(colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))
    except ValueError:
        return "#ffffff"
    return "#111111" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 else "#ffffff"


def layered_layout(nodes: Iterable[GNode], edges: Iterable[GEdge], category_order: dict[str, int] | None = None) -> Layout:
    """x in [0, 1] per row (evenly spread), y = -depth; barycentre ordering top-down.

    `category_order`: sort each row by node category first (e.g. only A | shared | only B)."""
    nodes = list(nodes)
    by_depth: dict[int, list[GNode]] = {}
    for n in nodes:
        by_depth.setdefault(n.depth, []).append(n)
    ups: dict[str, list[str]] = {}
    for e in edges:
        ups.setdefault(e.lower, []).append(e.upper)
    out = Layout(depths=sorted(by_depth))
    for d in out.depths:
        row = by_depth[d]

        def key(n: GNode) -> tuple[float, float, float]:
            xs = [out.pos[u][0] for u in ups.get(n.id, []) if u in out.pos]
            rank = (category_order or {}).get(n.category, 0)
            return (rank, sum(xs) / len(xs) if xs else 0.5, n.order)

        row.sort(key=key)
        k = len(row)
        for i, n in enumerate(row):
            out.pos[n.id] = ((i + 0.5) / k, -float(d))
    return out


# --------------------------------------------------------------------------- labels that do not overlap
PLOT_WIDTH_PX = 900  # drawing width assumed for a full-width chart: the wide layout on a 1360 px window
CHAR_PX = {10: 6.3, 9: 5.6}  # average glyph width of digits and lower-case text at font sizes 10 and 9
X_SPAN = 1.06  # the x axis range [-0.03, 1.03]


@dataclass
class LabelPlan:
    """Where each node's label goes: `inside` the marker, `above`/`below` it, or nowhere (hover only)."""

    text: dict[str, str] = field(default_factory=dict)
    place: dict[str, str] = field(default_factory=dict)  # "inside" | "above" | "below"
    size: dict[str, float] = field(default_factory=dict)  # marker size (px), shrunk in dense rows
    hidden: int = 0  # nodes whose label only shows on hover


def text_px(text: str, font: int = 10) -> float:
    return len(text) * CHAR_PX.get(font, 0.63 * font)


def label_plan(rows: dict[int, list[GNode]], *, width_px: float = PLOT_WIDTH_PX, selected: str | None = None) -> LabelPlan:
    """Place every label so that no two overlap, from each row's node spacing at `width_px`.

    `rows`: the nodes of each row, left to right.  Markers shrink to at most 85 % of the spacing
    (so they never touch).  Per row, the first way that fits every label of the row: inside the
    markers; above them (the widest label narrower than the spacing); above and below,
    alternating (narrower than twice the spacing); the same three with the `short` labels; else no
    text in that row (the hover box still names each node).  The selected node is labelled above
    in any case.
    """
    plan = LabelPlan()
    for row in rows.values():
        spacing = width_px / X_SPAN / max(1, len(row))
        for n in row:
            plan.size[n.id] = max(5.0, min(n.size, 0.85 * spacing))
        chosen = None
        for texts in ([n.label for n in row], [n.short or n.label for n in row]):
            widest = max((text_px(t) for t in texts if t), default=0.0)
            if all(n.label_inside and text_px(t, 9) + 3 <= plan.size[n.id] for n, t in zip(row, texts)):
                chosen = (texts, ["inside"] * len(row))
            elif widest + 4 <= spacing:
                chosen = (texts, ["above"] * len(row))
            elif widest + 4 <= 2 * spacing:
                chosen = (texts, ["above" if i % 2 == 0 else "below" for i in range(len(row))])
            if chosen:
                break
        for i, n in enumerate(row):
            if chosen and chosen[0][i]:
                plan.text[n.id], plan.place[n.id] = chosen[0][i], chosen[1][i]
            elif n.id == selected and (n.short or n.label):
                plan.text[n.id], plan.place[n.id] = n.short or n.label, "above"
            elif n.label:
                plan.hidden += 1
    return plan


def _weight_bins(edges: list[GEdge], bins: int = 5) -> tuple[float, list[list[GEdge]]]:
    top = max((abs(e.weight) for e in edges), default=0.0) or 1.0
    out: list[list[GEdge]] = [[] for _ in range(bins)]
    for e in edges:
        b = min(bins - 1, int(abs(e.weight) / top * bins))
        out[b].append(e)
    return top, out


def layered_figure(
    nodes: list[GNode],
    edges: list[GEdge],
    *,
    layer_names: dict[int, str] | None = None,
    node_colours: dict[str, str] | None = None,
    selected: str | None = None,
    weight_name: str = "weight",
    category_order: dict[str, int] | None = None,
    width_px: float = PLOT_WIDTH_PX,
) -> go.Figure:
    """A layered graph: nodes by depth (0 on top), edges lower -> upper, labels placed by `label_plan`
    for a chart drawn `width_px` wide; `fig.layout.meta` holds {"unlabelled": nodes labelled on hover only}."""
    lay = layered_layout(nodes, edges, category_order)
    pos = lay.pos
    edges = [e for e in edges if e.lower in pos and e.upper in pos]
    rows: dict[int, list[GNode]] = {}
    for n in sorted(nodes, key=lambda n: pos[n.id][0]):
        rows.setdefault(n.depth, []).append(n)
    plan = label_plan(rows, width_px=width_px, selected=selected)
    colour_of = _node_colours(nodes, node_colours or {})
    traces = [
        *_weighted_edge_traces([e for e in edges if not e.category], pos, weight_name, signed=any(e.weight < 0 for e in edges)),
        *_category_edge_traces([e for e in edges if e.category], pos),
        *_edge_hover_traces(edges, pos, weight_name),
        *_node_traces(nodes, pos, plan, colour_of, selected),
        *_label_traces(nodes, pos, plan, colour_of),
    ]
    fig = go.Figure(traces)
    _layered_axes(fig, lay.depths, layer_names or {}, plan.hidden)
    return fig


def _line_trace(group: list[GEdge], pos, colour: str, width: float, name: str, legend: bool) -> go.Scatter:
    """One trace drawing `group`'s edges as segments (None breaks the line between them)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for e in group:
        (x0, y0), (x1, y1) = pos[e.lower], pos[e.upper]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    return go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": width}, hoverinfo="skip",
                      name=name, showlegend=legend, legendgroup=name)


def _weighted_edge_traces(edges: list[GEdge], pos, weight_name: str, *, signed: bool) -> list[go.Scatter]:
    """Edges by |weight| bin (width and shade grow with the bin), blue for positive and red for
    negative weights; the legend names each bin's range (signed when any weight is negative)."""
    if not edges:
        return []
    traces = []
    top, bins = _weight_bins(edges)
    for i, group in enumerate(bins):
        if not group:
            continue
        frac = (i + 0.5) / len(bins)
        pos_colour = sample_colorscale("Blues", [0.35 + 0.65 * frac])[0]
        neg_colour = sample_colorscale("Reds", [0.35 + 0.65 * frac])[0]
        width = 0.6 + 4.4 * frac
        lo, hi = top * i / len(bins), top * (i + 1) / len(bins)
        for sign, colour in ((1, pos_colour), (-1, neg_colour)):
            part = [e for e in group if (e.weight >= 0) == (sign > 0)]
            if part:
                label = f"{'−' if sign < 0 else ''}{weight_name} {lo:.2g}–{hi:.2g}" if signed else f"{weight_name} {lo:.2g}–{hi:.2g}"
                traces.append(_line_trace(part, pos, colour, width, label, True))
    return traces


def _category_edge_traces(edges: list[GEdge], pos) -> list[go.Scatter]:
    """Diff edges in their category's colour (shared / only A / only B), thick at half the largest
    |weight| or more; one legend entry per category."""
    if not edges:
        return []
    traces = []
    top = max(abs(e.weight) for e in edges) or 1.0
    for cat in ("both", "only_a", "only_b"):
        group = [e for e in edges if e.category == cat]
        first = True
        for thick in (False, True):
            part = [e for e in group if (abs(e.weight) / top >= 0.5) == thick]
            if part:
                traces.append(_line_trace(part, pos, DIFF_COLOURS.get(cat, "#999"), 3.5 if thick else 1.2,
                                          f"{DIFF_NAMES.get(cat, cat)} edges", first))
                first = False
    return traces


def _edge_hover_traces(edges: list[GEdge], pos, weight_name: str) -> list[go.Scatter]:
    """Invisible points in the middle of the edges that carry their hover text."""
    if not edges:
        return []
    return [go.Scatter(
        x=[(pos[e.lower][0] + pos[e.upper][0]) / 2 for e in edges],
        y=[(pos[e.lower][1] + pos[e.upper][1]) / 2 for e in edges],
        mode="markers", marker={"size": 6, "opacity": 0.0}, showlegend=False,
        hovertext=[e.hover or f"{plot_text(e.lower)} → {plot_text(e.upper)}<br>{weight_name} {e.weight:.4g}" for e in edges],
        hoverinfo="text", name="edges",
    )]  # fmt: skip


_DEFAULT_NODE_COLOURS = ["#1f7a70", "#264653", "#e9c46a", "#f4a261", "#e76f51"]


def _node_colours(nodes: list[GNode], palette: dict[str, str]) -> dict[str, str]:
    """node id -> marker colour: the palette's colour of its category, else the defaults in the
    order categories first appear."""
    cats = list(dict.fromkeys(n.category for n in nodes))
    return {n.id: palette.get(n.category, _DEFAULT_NODE_COLOURS[cats.index(n.category) % len(_DEFAULT_NODE_COLOURS)])
            for n in nodes}


def _node_traces(nodes: list[GNode], pos, plan: LabelPlan, colour_of: dict[str, str], selected: str | None) -> list[go.Scatter]:
    """The node markers, one trace per category (hover and click; the selected node ringed red)."""
    cats: dict[str, list[GNode]] = {}
    for n in nodes:
        cats.setdefault(n.category, []).append(n)
    return [go.Scatter(
        x=[pos[n.id][0] for n in group], y=[pos[n.id][1] for n in group], mode="markers",
        marker={"size": [plan.size[n.id] for n in group], "color": colour_of[group[0].id], "opacity": 1,
                "line": {"width": [3 if n.id == selected else 0.5 for n in group],
                         "color": ["#d62728" if n.id == selected else "#ffffff" for n in group]}},
        hovertext=[n.hover or plot_text(n.id) for n in group], hoverinfo="text", customdata=[n.id for n in group],
        name=DIFF_NAMES.get(cat, cat), showlegend=len(cats) > 1,
        # opaque whatever the click selection (plotly dims unselected points): edges stay behind the nodes
        selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
    ) for cat, group in cats.items()]  # fmt: skip


def _label_traces(nodes: list[GNode], pos, plan: LabelPlan, colour_of: dict[str, str]) -> list[go.Scatter]:
    """The labels `plan` placed, one text trace per placement (inside, above, below the marker)."""
    traces = []
    for place, textpos, font in (("inside", "middle center", {"size": 9}),
                                 ("above", "top center", {"size": 10, "color": "#333333", "shadow": "0 0 3px #ffffff"}),
                                 ("below", "bottom center", {"size": 10, "color": "#333333", "shadow": "0 0 3px #ffffff"})):
        ids = [n.id for n in nodes if plan.place.get(n.id) == place]
        if ids:
            if place == "inside":  # white on dark markers, near-black on light ones (orange, yellow)
                font = {**font, "color": [_ink(colour_of[i]) for i in ids]}
            traces.append(go.Scatter(  # invisible markers of the nodes' sizes: plotly sets text off by them
                x=[pos[i][0] for i in ids], y=[pos[i][1] for i in ids], mode="markers+text", text=[plan.text[i] for i in ids],
                marker={"size": [plan.size[i] for i in ids], "opacity": 0}, textposition=textpos, textfont=font,
                selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}},
                hoverinfo="skip", customdata=ids, showlegend=False, name=f"labels {place}",
            ))  # fmt: skip
    return traces


def _layered_axes(fig: go.Figure, depths: list[int], names: dict[int, str], unlabelled: int) -> None:
    """Height by the number of rows, one y tick per depth named by its layer, no x axis."""
    fig.update_layout(
        meta={"unlabelled": unlabelled},
        height=min(900, 140 + 130 * max(1, len(depths))),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        plot_bgcolor="white",
        hovermode="closest",
        clickmode="event+select",
        dragmode="pan",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "font": {"size": 10}},
        xaxis={"visible": False, "range": [-0.03, 1.03]},
        yaxis={
            "tickmode": "array",
            "tickvals": [-float(d) for d in depths],
            "ticktext": [plot_text(names.get(d, f"depth {d}")) for d in depths],  # layer names are data
            "showgrid": True,
            "gridcolor": "#eeeeee",
            "zeroline": False,
            "automargin": True,
            "range": [-(max(depths, default=0)) - 0.5, 0.6],
        },
    )


# --------------------------------------------------------------------------- console results
def spring_layout(ids: list[str], links: list[tuple[str, str]], seed: int = 0) -> dict[str, tuple[float, float]]:
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(ids)
    g.add_edges_from((a, b) for a, b in links if a in g and b in g)
    if len(ids) <= 1:
        return {i: (0.0, 0.0) for i in ids}
    raw = nx.spring_layout(g, seed=seed, iterations=60)
    return {k: (float(v[0]), float(v[1])) for k, v in raw.items()}


def result_figure(nodes: dict[str, dict[str, Any]], rels: list[dict[str, Any]], *, height: int = 520) -> go.Figure:
    """Nodes ``{id: {labels, props}}`` and relationships ``[{type, start, end, props}]``."""
    ids = list(nodes)
    pos = spring_layout(ids, [(r["start"], r["end"]) for r in rels])
    roots = server_roots()  # once per figure, not once per hover text
    traces: list[go.BaseTraceType] = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rels:
        if r["start"] in pos and r["end"] in pos:
            by_type.setdefault(r["type"], []).append(r)
    greys = ["#9e9e9e", "#b0bec5", "#bcaaa4", "#a5d6a7", "#ce93d8"]
    for i, (t, group) in enumerate(sorted(by_type.items())):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for r in group:
            (x0, y0), (x1, y1) = pos[r["start"]], pos[r["end"]]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"width": 1.2, "color": greys[i % len(greys)]},
                                 hoverinfo="skip", name=plot_text(f":{t}")))
        traces.append(go.Scatter(
            x=[(pos[r["start"]][0] + pos[r["end"]][0]) / 2 for r in group],
            y=[(pos[r["start"]][1] + pos[r["end"]][1]) / 2 for r in group],
            mode="markers", marker={"size": 5, "opacity": 0.0}, showlegend=False, hoverinfo="text",
            hovertext=[plot_text(f":{r['type']} ") + _props(r["props"], roots) for r in group],
        ))  # fmt: skip
    by_label: dict[str, list[str]] = {}
    for nid, n in nodes.items():
        by_label.setdefault(":".join(n["labels"]) or "(node)", []).append(nid)
    colours = ["#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8ab17d", "#6d597a", "#f4a261", "#457b9d"]
    for i, (label, group) in enumerate(sorted(by_label.items())):
        traces.append(go.Scatter(
            x=[pos[n][0] for n in group], y=[pos[n][1] for n in group], mode="markers+text",
            text=[_caption(nodes[n]) for n in group], textposition="top center", textfont={"size": 9},
            marker={"size": 13, "color": colours[i % len(colours)]}, name=plot_text(label),
            hovertext=[plot_text(f"{label} ") + _props(nodes[n]["props"], roots) for n in group], hoverinfo="text",
        ))  # fmt: skip
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin={"l": 5, "r": 5, "t": 5, "b": 5}, plot_bgcolor="white",
                      xaxis={"visible": False}, yaxis={"visible": False}, dragmode="pan",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0})
    return fig


def _caption(node: dict[str, Any]) -> str:
    p = node["props"]
    for key in ("name", "label", "uid"):
        if p.get(key) not in (None, ""):
            text = str(p[key])
            return plot_text(text if len(text) <= 28 else "…" + text[-27:])  # store text is data, not markup
    return ""


def _props(props: dict[str, Any], roots: list, limit: int = 8) -> str:
    items = list(props.items())[:limit]
    # the store keeps absolute paths (Image.source): visitors see them relative to `roots`
    return "<br>".join(f"{plot_text(k)}: {plot_text(_short(no_server_paths(v, roots) if isinstance(v, str) else v))}"
                       for k, v in items)  # no markup from the store


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def fitted_range(matrix: Any) -> tuple[float, float]:
    """The colour range of a similarity heatmap: the smallest and largest off-diagonal value (the
    diagonal is 1 by definition and would squeeze real values of 0-0.25 into one colour)."""

    m = np.asarray(matrix, dtype=float)
    off = m[~np.eye(len(m), dtype=bool)] if len(m) > 1 else m.ravel()
    off = off[np.isfinite(off)]
    if off.size == 0:
        return 0.0, 1.0
    lo, hi = float(off.min()), float(off.max())
    if hi - lo < 0.01:  # (nearly) one value: a band of 0.01 around it, so the scale still reads
        lo = max(0.0, (lo + hi) / 2 - 0.005)
        hi = lo + 0.01
    return lo, hi


CELL_TEXT_MAX = 24  # up to this many rows the cells show their values; beyond, hover only


def heatmap_figure(labels: list[str], matrix: Any, *, title: str = "", zrange: tuple[float, float] | None = None) -> go.Figure:
    """Class-by-class Jaccard heatmap, colour range fitted to the off-diagonal values (`fitted_range`)
    or `zrange`; the diagonal cells are left blank (a class against itself says nothing).
    `labels` are plain text (escaped here for plotly)."""

    labels = [plot_text(x) for x in labels]
    m = np.asarray(matrix, dtype=float).copy()
    n = len(labels)
    np.fill_diagonal(m, np.nan)
    lo, hi = zrange or fitted_range(matrix)
    text = [["–" if i == j else f"{m[i, j]:.2f}" for j in range(n)] for i in range(n)]
    z = [[None if i == j else float(m[i, j]) for j in range(n)] for i in range(n)]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, colorscale="Viridis", zmin=lo, zmax=hi, text=text,
        texttemplate="%{text}" if n <= CELL_TEXT_MAX else None, textfont={"size": 10}, hoverongaps=False,
        hovertemplate="%{y} vs %{x}<br>Jaccard %{text}<extra></extra>",
        colorbar={"title": {"text": "Jaccard"}, "tickformat": ".2f"},
    ))  # fmt: skip
    fig.update_layout(height=min(900, 200 + (42 if n <= CELL_TEXT_MAX else 16) * n),
                      margin={"l": 10, "r": 10, "t": 30 if title else 10, "b": 10}, title=title or None,
                      yaxis={"autorange": "reversed", "tickfont": {"size": 10 if n <= CELL_TEXT_MAX else 9}},
                      xaxis={"tickangle": -45, "tickfont": {"size": 10 if n <= CELL_TEXT_MAX else 9}},
                      plot_bgcolor="#f4f4f4")
    return fig


def bar_figure(x: list[str], series: dict[str, list[float]], *, y_title: str = "", height: int = 280) -> go.Figure:
    """Grouped bars; `x` (layer names) are plain text, escaped here for plotly."""
    x = [plot_text(v) for v in x]
    fig = go.Figure([go.Bar(name=name, x=x, y=vals) for name, vals in series.items()])
    fig.update_layout(barmode="group", height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      yaxis={"title": y_title}, legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0})
    return fig


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
