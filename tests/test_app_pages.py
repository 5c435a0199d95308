"""The app's pages under Streamlit's AppTest, on a real embedded store.

Most tests use a small synthetic store (four `make_circuit` classes with thumbnails), checked
against the Circuit objects; the last ones run on the real ingested demo store (`ingested`).
"""

from __future__ import annotations

import os
import random
import re
import uuid
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import data  # noqa: E402
from app.text import md_text  # noqa: E402
from ingest.store.embedded import create_database, drop_database, free_port  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import write_circuit  # noqa: E402
from tests.fixtures_store import make_circuit  # noqa: E402

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
M = "testnet"
LAYERS = [("logits", 6), ("layer3", 16), ("layer2", 16), ("layer1", 8)]
CLASSES = [0, 1, 2, 3]
ENV = ("NEURFLOW_STORE_URI", "NEURFLOW_STORE_USER", "NEURFLOW_STORE_PASSWORD", "NEURFLOW_STORE_DATABASE", "NEURFLOW_ARTIFACT_DIR")


def _thumb(crop_id: int):
    from PIL import Image

    return Image.new("L", (14, 14), random.Random(crop_id).randint(0, 255))


class _Env:
    """Set NEURFLOW_* variables for a while (the app reads its store from the environment)."""

    def __init__(self, **values: str | None):
        self.values = values
        self.saved = {k: os.environ.get(k) for k in ENV}

    def __enter__(self):
        for k, v in self.values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        data.forget_version()
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        data.forget_version()


@pytest.fixture(scope="module")
def synthetic(store_server, tmp_path_factory):
    """(config, {class: Circuit}, artifact folder) of a store with four synthetic classes."""
    name = "app_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    cfg = store_server.with_database(name)
    artifacts = tmp_path_factory.mktemp("app-artifacts")
    circuits = {c: make_circuit(c, layers=LAYERS, class_name=f"cls{c}") for c in CLASSES}
    with Store(cfg) as store:
        ensure_schema(store)
        for c in circuits.values():
            write_circuit(store, c, artifacts, thumbnails=_thumb)
    with _Env(NEURFLOW_STORE_DATABASE=name, NEURFLOW_ARTIFACT_DIR=str(artifacts)):
        yield cfg, circuits, artifacts
    drop_database(store_server, name)


def page(name: str, **query: object) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["page"] = name
    for k, v in query.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(markdown: str) -> str:
    """What a Markdown text the app built reads as, as far as `app.text.md_text` goes: its escapes
    and empty ``:small[]`` splitters removed (the page's own ``**`` stays)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(markdown).replace(":small[]", ""))


def texts(at: AppTest) -> str:
    """The page's Markdown texts as they read (`shown`)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [h.value for h in at.header]
    parts += [h.value for h in at.subheader] + [i.value for i in at.info] + [e.value for e in at.error]
    return "\n".join(shown(p) for p in parts)


def frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def n_images(at: AppTest) -> int:
    return sum(len(im.value) for im in at.image)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def test_app_reads_thumbnails_where_ingestion_writes_them(synthetic):
    from ingest.store.config import artifact_dir

    with _Env(NEURFLOW_ARTIFACT_DIR=None):
        assert data.artifact_dir() == artifact_dir(data.config())


# --------------------------------------------------------------------------- overview
def test_overview_shows_classes_circuits_and_store(synthetic):
    cfg, circuits, artifacts = synthetic
    at = page("overview")
    body = texts(at)
    for c in circuits.values():
        assert f"{c.class_index} · {c.class_name}" in body
    table = next(df for df in frames(at) if "status" in df.columns)
    assert sorted(table["class_index"]) == CLASSES
    assert set(table["circuit"]) == {c.uid for c in circuits.values()}
    assert dict(zip(table["circuit"], table["neurons"])) == {c.uid: len(c.neurons) for c in circuits.values()}
    assert n_images(at) > 0  # the class gallery shows crops
    store_table = at.table[0].value  # st.table draws Markdown: its cells are escaped text
    assert md_text(cfg.uri) in store_table["value"].tolist()
    assert str(artifacts) not in store_table["value"].tolist()  # no server path (the app may be open to anyone)
    assert at.query_params["model"] == M


def test_gallery_button_opens_the_circuit_of_the_class(synthetic):
    at = page("overview")
    at.button(key="open_circuit_2").click().run()
    assert not at.exception
    assert at.query_params["page"] == "circuit"
    assert at.query_params["class"] == "2"
    assert "Circuit of a class" in texts(at)


# --------------------------------------------------------------------------- circuit
def _short_groups(c, depth_filter=None):
    return {f"{c.layer_name(m.depth)}/g{m.group}" for m in c.group_members if depth_filter is None or m.depth == depth_filter}


def test_circuit_page_group_level(synthetic):
    _, circuits, _ = synthetic
    c = circuits[1]
    at = page("circuit", **{"class": 1, "level": "group", "w": 0, "k": 64})
    group_box = at.selectbox(key="w:group")
    assert {"/".join(o.split(" · ")[:2]) for o in group_box.options} == _short_groups(c)
    assert at.get("plotly_chart"), "the group graph is drawn"
    # every GROUP_FEEDS edge is kept at threshold 0 and top-k 64
    assert f"{len(c.group_edges)} GROUP_FEEDS edges drawn" in texts(at)
    # choose a group of layer3: its member concepts are listed with their crops
    target = next(g for g in sorted(_short_groups(c, 1)))
    group_box.set_value(target).run()
    assert not at.exception
    assert at.query_params["group"] == target
    gi = int(target.rsplit("g", 1)[1])
    members = c.groups(1)[gi]
    body = texts(at)
    for ch, _k in members:
        assert f"**#{ch}** · concept" in body
    assert n_images(at) > 0


def test_clicking_a_node_selects_it(synthetic):
    _, circuits, _ = synthetic
    c = circuits[1]
    target = sorted(_short_groups(c, 2))[-1]
    at = page("circuit", **{"class": 1, "level": "group", "w": 0})
    assert at.selectbox(key="w:group").value != target
    # what the browser sends when a node of the plotly chart is clicked
    at.session_state["group_graph_1"] = {"selection": {"points": [{"customdata": f"{c.uid}/{target}"}]}}
    at.run()
    assert not at.exception
    assert at.selectbox(key="w:group").value == target and at.query_params["group"] == target


def test_group_edges_are_pruned_in_the_store(synthetic):
    """Threshold (share of the strongest |W| into the layer) and top-k per upper group, from the Circuit."""
    _, circuits, _ = synthetic
    c = circuits[2]
    top = {d: max(abs(e.weight) for e in c.group_edges if e.depth == d) for d in {e.depth for e in c.group_edges}}
    for frac, k in [(0.0, 64), (0.5, 64), (0.0, 1), (0.3, 2)]:
        expected = set()
        by_upper: dict = {}
        for e in c.group_edges:
            if abs(e.weight) >= frac * top[e.depth]:
                by_upper.setdefault((e.depth, e.upper_group), []).append(e)
        for (d, ug), es in by_upper.items():
            es.sort(key=lambda e: (-abs(e.weight), f"{c.uid}/{c.layer_name(d + 1)}/g{e.lower_group}"))
            for e in es[:k]:
                expected.add((f"{c.uid}/{c.layer_name(d + 1)}/g{e.lower_group}", f"{c.uid}/{c.layer_name(d)}/g{ug}"))
        rows = data.app_query("group_edges", model=M, class_index=2, params=None, min_frac=frac, top_k=k, limit=10000)
        assert {(r["lower"], r["upper"]) for r in rows} == expected, (frac, k)


def test_neuron_edges_are_pruned_in_the_store(synthetic):
    _, circuits, _ = synthetic
    c = circuits[0]
    top = {d: max(r.importance for r in c.core if r.depth == d) for d in {r.depth for r in c.core}}
    for frac, k, deepest in [(0.0, 64, 3), (0.4, 2, 3), (0.0, 1, 1), (0.9, 64, 3)]:
        expected = {
            (f"{M}/{c.layer_name(r.depth + 1)}/{r.lower_channel}", f"{M}/{c.layer_name(r.depth)}/{r.channel}")
            for r in c.core if r.rank < k and r.importance >= frac * top[r.depth] and r.depth <= deepest - 1
        }  # fmt: skip
        rows = data.app_query("neuron_edges", model=M, class_index=0, params=None, min_frac=frac, top_k=k,
                              max_depth=deepest - 1, limit=10000)
        assert {(r["lower"], r["upper"]) for r in rows} == expected, (frac, k, deepest)


def test_circuit_page_neuron_level_shows_concepts_and_users(synthetic):
    _, circuits, _ = synthetic
    c = circuits[3]
    ch = c.critical(1)[0]
    at = page("circuit", **{"class": 3, "level": "neuron", "w": 0, "k": 64, "neuron": f"layer3/{ch}"})
    assert at.selectbox(key="w:neuron").value == f"layer3/{ch}"
    body = texts(at)
    for k in c.concepts_of(1, ch):
        assert f"**concept {k.index}**" in body
    users = [cl for cl, cc in circuits.items() if ch in cc.critical(1)]
    used = next(df for df in frames(at) if "feeds_up" in df.columns)
    assert sorted(used["class_index"]) == users
    assert f"{len(c.core)} FEEDS edges drawn" in texts(at)


def test_circuit_page_unknown_url_values_fall_back(synthetic):
    at = page("circuit", **{"class": 99, "level": "bogus", "w": "x", "k": -5})
    assert at.selectbox(key="w:class").value == 0
    assert at.radio(key="w:level").value == "group"
    assert at.query_params["class"] == "0"


# --------------------------------------------------------------------------- compare
def test_compare_two_classes(synthetic):
    _, circuits, _ = synthetic
    a, b = circuits[0], circuits[2]
    at = page("compare", classes="0,2")
    overlap = next(df for df in frames(at) if "Jaccard" in df.columns and "shared by all" in df.columns)
    for _, row in overlap.iterrows():
        d = int(row["depth"])
        sa, sb = set(a.critical(d)), set(b.critical(d))
        assert row["shared by all"] == len(sa & sb)
        assert row["only cls0"] == len(sa - sb) and row["only cls2"] == len(sb - sa)
        assert row["Jaccard"] == pytest.approx(jaccard(sa, sb), abs=1e-4)
    metrics = {m.label: m.value for m in at.metric}
    na = {(n.depth, n.channel) for n in a.neurons}
    nb = {(n.depth, n.channel) for n in b.neurons}
    assert int(metrics["neurons shared"]) == len(na & nb)
    assert int(metrics["only A"]) == len(na - nb) and int(metrics["only B"]) == len(nb - na)
    fa = {(r.depth, r.channel, r.lower_channel) for r in a.core}
    fb = {(r.depth, r.channel, r.lower_channel) for r in b.core}
    assert int(metrics["FEEDS shared"]) == len(fa & fb)
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # overlap bars, diff circuit, heatmap


def test_compare_three_classes_and_heatmap(synthetic):
    _, circuits, _ = synthetic
    at = page("compare", classes="0,1,3", layer="layer2")
    overlap = next(df for df in frames(at) if "shared by all" in df.columns)
    row = overlap[overlap["layer"] == "layer2"].iloc[0]
    sets = [set(circuits[c].critical(2)) for c in (0, 1, 3)]
    assert row["shared by all"] == len(set.intersection(*sets))
    assert row["Jaccard"] == pytest.approx(len(set.intersection(*sets)) / len(set.union(*sets)), abs=1e-4)
    assert "mean pairwise Jaccard" in overlap.columns
    assert at.selectbox(key="w:layer").value == "layer2"


def test_hub_neurons_and_reverse_lookup(synthetic):
    _, circuits, _ = synthetic
    count: dict = {}
    for cl, c in circuits.items():
        for n in c.neurons:
            if n.depth > 0:
                count.setdefault((c.layer_name(n.depth), n.channel), set()).add(cl)
    best = max(len(v) for v in count.values())
    layer, ch = sorted(k for k, v in count.items() if len(v) == best)[0]
    at = page("compare", classes="0,1", rl_layer=layer, rl_channel=ch)
    hubs = next(df for df in frames(at) if "used by" in df.columns)
    assert hubs["classes"].iloc[0] == best
    rev = next(df for df in frames(at) if "groups (via its concepts)" in df.columns)
    assert [int(s.split(" · ")[0]) for s in rev["class"]] == sorted(count[(layer, ch)])
    assert f"**{layer} #{ch}** is critical for **{best}**" in texts(at)


def test_hubs_ranked_by_classes_then_importance(synthetic):
    """The hub table's second ranking column is the neuron's importance (its FEEDS importances
    I_u(v), summed) summed over the circuits that include it, ties of `classes` broken by it,
    and the caption explains it."""
    _, circuits, _ = synthetic
    stats: dict = {}
    for cl, c in circuits.items():
        for r in c.core:  # r: upper (depth, channel) <- lower channel at depth + 1, importance I_u(v)
            key = (c.layer_name(r.depth + 1), r.lower_channel)
            stats.setdefault(key, {"classes": set(), "importance": 0.0})
            stats[key]["classes"].add(cl)
            stats[key]["importance"] += r.importance
    at = page("compare", classes="0,1", hubs=200)
    hubs = next(df for df in frames(at) if "used by" in df.columns)
    assert "importance" in hubs.columns
    for _, row in hubs.iterrows():
        layer, ch = row["neuron"].split(" #")
        want = stats[(layer, int(ch))]
        assert row["classes"] == len(want["classes"])
        assert row["importance"] == pytest.approx(want["importance"], rel=1e-4)
    keys = list(zip(hubs["classes"], hubs["importance"]))
    assert keys == sorted(keys, key=lambda k: (-k[0], -k[1]))
    assert "ties (e.g. neurons every class shares) by **importance**" in texts(at)
    later = next(df for df in frames(page("compare", classes="0,1", hubs=2, hub_from=3)) if "used by" in df.columns)
    assert list(later["neuron"]) == list(hubs["neuron"][2:4]) and list(later["rank"]) == [3, 4]


def test_reverse_lookup_pages(synthetic, monkeypatch):
    from app.views import compare

    _, circuits, _ = synthetic
    users: dict = {}
    for cl, c in circuits.items():
        for ch in c.critical(1):
            users.setdefault(ch, []).append(cl)
    ch, cls = max(users.items(), key=lambda kv: (len(kv[1]), -kv[0]))
    assert len(cls) >= 2
    monkeypatch.setattr(compare, "REVERSE_PAGE", 1)
    at = page("compare", classes="0,1", rl_layer="layer3", rl_channel=ch, rl_page=2)
    rev = next(df for df in frames(at) if "groups (via its concepts)" in df.columns)
    assert [int(s.split(" · ")[0]) for s in rev["class"]] == [sorted(cls)[1]]
    assert f"critical for **{len(cls)}** of 4 classes (rows 2-2, page 2 of {len(cls)})" in texts(at)


def _figure(at: AppTest, key: str) -> dict:
    """The plotly figure (JSON) of the chart with widget key `key`, as the browser receives it."""
    import json

    chart = next(c for c in at.get("plotly_chart") if key in c.proto.id)
    return json.loads(chart.proto.spec)


def test_many_classes_page_the_gallery_and_split_the_compare_page(synthetic, monkeypatch):
    """Past ALL_SECTIONS_MAX classes the compare page shows one section per run, and the heatmap
    one block of HEATMAP_PAGE classes in cluster order, by default the block of the first picked class."""
    from app import data as app_data
    from app.views import compare, overview

    _, circuits, _ = synthetic
    monkeypatch.setattr(overview, "GALLERY_PAGE", 2)
    monkeypatch.setattr(compare, "ALL_SECTIONS_MAX", 2)
    monkeypatch.setattr(compare, "HEATMAP_PAGE", 2)
    at = page("overview", gp=2)
    keys = {b.key for b in at.button}
    assert {"open_circuit_2", "open_circuit_3"} <= keys and "open_circuit_0" not in keys

    at = page("compare", classes="3,0")
    assert "all" not in at.radio(key="w:view").options and at.radio(key="w:view").value == "overlap"
    assert not [c for c in at.get("plotly_chart") if "heatmap" in c.proto.id]  # other sections are not run
    at = page("compare", classes="3,0", view="similarity", layer="layer2")
    assert "Shared and unique critical neurons" not in texts(at)
    order = app_data.similarity(M, "layer2", None)["order"]
    block = next(k // 2 for k, i in enumerate(order) if CLASSES[i] == 3)
    assert at.number_input(key="w:hm_page").value == block + 1
    fig = _figure(at, "heatmap")
    shown = [int(x.split(" · ")[0]) for x in fig["data"][0]["x"]]
    assert shown == [CLASSES[i] for i in order[block * 2 : block * 2 + 2]] and 3 in shown
    assert "2 of 4 classes (block" in texts(at)

    at = page("compare", classes="0,1", view="similarity", layer="layer2", hm_q="cls1, cls3")
    fig = _figure(at, "heatmap")
    assert sorted(int(x.split(" · ")[0]) for x in fig["data"][0]["x"]) == [1, 3]
    assert "matching 'cls1, cls3'" in texts(at)


def test_heatmap_colour_range_fits_the_cells(synthetic):
    """zmin/zmax are the smallest and largest off-diagonal Jaccard of the classes shown (not 0-1),
    the diagonal is blank, and the caption states the range."""
    _, circuits, _ = synthetic
    at = page("compare", classes="0,1", view="similarity", layer="layer3")
    fig = _figure(at, "heatmap")
    shown = [int(x.split(" · ")[0]) for x in fig["data"][0]["x"]]
    assert sorted(shown) == CLASSES
    sets = {c: set(circuits[c].critical(1)) for c in shown}
    off = [jaccard(sets[a], sets[b]) for a in shown for b in shown if a != b]
    trace = fig["data"][0]
    assert trace["zmin"] == pytest.approx(min(off), abs=1e-6) and trace["zmax"] == pytest.approx(max(off), abs=1e-6)
    for i, a in enumerate(shown):
        assert trace["z"][i][i] is None
        for j, b in enumerate(shown):
            if a != b:
                assert trace["z"][i][j] == pytest.approx(jaccard(sets[a], sets[b]), abs=1e-6)
    assert f"{min(off):.2f} (dark) to {max(off):.2f} (yellow)" in texts(at)


def test_compare_needs_two_classes(synthetic):
    at = page("compare", classes="1")
    assert "Pick at least two classes" in texts(at)


# --------------------------------------------------------------------------- console
def test_console_runs_a_library_query_with_parameters(synthetic):
    _, circuits, _ = synthetic
    at = page("console", q="shared_neurons")
    box = at.text_input(key="w:p.shared_neurons.class_b")
    box.set_value("3").run()
    at.button(key="run_query").click().run()
    assert not at.exception
    df = frames(at)[0]
    a, b = circuits[0], circuits[3]
    for _, row in df.iterrows():
        d = int(row["depth"])
        assert row["n_shared"] == len(set(a.critical(d)) & set(b.critical(d)))
    assert at.query_params["run"] == "1" and at.query_params["p.shared_neurons.class_b"] == "3"
    assert at.get("download_button"), "CSV download offered"
    # the link reproduces the view: a new session with the same URL shows the same result
    again = page("console", **dict(at.query_params))
    assert frames(again)[0].equals(df)


def test_console_refuses_writes(synthetic):
    cfg = synthetic[0]
    with Store(cfg) as s:
        before = s.counts()
    at = page("console", q="custom")
    at.text_area(key="w:cy_custom").set_value("MATCH (n:Neuron) DETACH DELETE n").run()
    at.button(key="run_query").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith("Refused") and "DELETE" in errors[0] and "read-only" in errors[0]
    with Store(cfg) as s:
        assert s.counts() == before


def test_console_draws_nodes_and_relationships(synthetic):
    at = page("console", q="custom")
    at.text_area(key="w:cy_custom").set_value(
        "MATCH (cl:Class {model: $model})-[r:HAS_CIRCUIT]->(c:Circuit) RETURN cl, r, c").run()
    assert at.text_input(key="w:p.custom.model").value == M  # $model found and filled in
    at.button(key="run_query").click().run()
    assert not at.exception
    assert len(frames(at)[0]) == len(CLASSES)
    assert [t.label for t in at.tabs] == ["Table", "Graph"]
    assert any("nodes" in c.value and "relationships" in c.value for c in at.caption)


def test_console_results_show_no_server_paths(synthetic):
    """The store keeps absolute image paths and data folders; the console shows their names only,
    in plain and in JSON cells (a list or map); the CSV download is written from the same table."""
    at = page("console", q="custom")
    at.text_area(key="w:cy_custom").set_value(
        "MATCH (i:Image) WITH i ORDER BY i.source LIMIT 3 "
        "MATCH (c:Circuit) WITH i, c LIMIT 3 RETURN i.source AS source, [i.source] AS sources, c.data_source AS data").run()
    at.button(key="run_query").click().run()
    assert not at.exception
    df = frames(at)[0]
    assert len(df) == 3
    for _, row in df.iterrows():
        assert re.fullmatch(r"img\d+\.png", row["source"]), row["source"]  # the store holds /data/<model>/imgN.png
        assert row["sources"] == f'["{row["source"]}"]'
        assert row["data"] == f"folder:{M}"  # the store holds folder:/data/<model>


def test_console_reports_bad_cypher(synthetic):
    at = page("console", q="custom")
    at.text_area(key="w:cy_custom").set_value("MATCH (n RETURN n").run()
    at.button(key="run_query").click().run()
    assert not at.exception
    assert at.error and "failed" in at.error[0].value


# --------------------------------------------------------------------------- state, caching, failures
def test_url_state_follows_widgets_and_survives_page_switches(synthetic):
    at = page("compare", classes="0,1")
    at.multiselect(key="w:classes").set_value([1, 2, 3]).run()
    assert at.query_params["classes"] == "1,2,3"
    at.radio(key="w:page").set_value("console").run()
    assert "classes" not in at.query_params  # the URL holds the view shown
    at.radio(key="w:page").set_value("compare").run()
    assert at.multiselect(key="w:classes").value == [1, 2, 3]
    assert at.query_params["classes"] == "1,2,3"


def test_cache_follows_new_ingestions(synthetic):
    cfg, circuits, artifacts = synthetic
    at = page("overview")
    n0 = len(next(df for df in frames(at) if "status" in df.columns))
    extra = make_circuit(4, layers=LAYERS, class_name="cls4")
    with Store(cfg) as s:
        write_circuit(s, extra, artifacts, thumbnails=_thumb)
    try:
        data.forget_version()  # the version is re-read every few seconds; do not wait in a test
        at = page("overview")
        table = next(df for df in frames(at) if "status" in df.columns)
        assert len(table) == n0 + 1 and extra.uid in set(table["circuit"])
    finally:
        with Store(cfg) as s:
            from ingest.write.writer import delete_circuit

            delete_circuit(s, extra.uid)
        data.forget_version()


def test_empty_store_gets_a_friendly_message(store_config):
    with _Env(NEURFLOW_STORE_DATABASE=store_config.database):
        for name in ("overview", "circuit", "compare"):
            at = page(name)
            assert "holds no complete circuits" in texts(at)
            assert store_config.data_dir and store_config.data_dir not in texts(at)  # no server path for visitors
        at = page("console")  # the console still works on an empty store
        assert at.selectbox(key="w:q").value == "models"


def test_store_down_gets_a_friendly_message(store_server):
    with _Env(NEURFLOW_STORE_URI=f"bolt://127.0.0.1:{free_port()}", NEURFLOW_STORE_USER="neo4j", NEURFLOW_STORE_PASSWORD="x"):
        at = page("overview")
        assert at.error and "cannot reach the store" in at.error[0].value
        assert at.button(key="retry_store")


def test_neurflow_app_and_demo_commands_are_registered():
    from cli.app_commands import streamlit_command
    from cli.main import build_parser

    args = build_parser().parse_args(["app", "--port", "8600"])
    assert args.port == 8600 and args.func.__name__ == "cmd_app"
    args = build_parser().parse_args(["demo", "--no-app", "--tau", "4"])
    assert args.no_app and args.tau == 4 and args.func.__name__ == "cmd_demo"
    args = build_parser().parse_args(["demo"])
    from cli.options import params_from_args

    p = params_from_args(args)  # the demo's settings (docs/demo-model.md), not `neurflow ingest`'s
    assert (p.tau, p.k, p.ig_steps, p.max_images, p.granularities, p.min_crop_std) == (3, 20, 16, 60, (1.0, 0.5), 0.2)
    assert not args.no_evaluate
    assert build_parser().parse_args(["demo", "--no-evaluate"]).no_evaluate
    cmd = streamlit_command(8600)
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[3] == "run"


# --------------------------------------------------------------------------- the real demo store
@pytest.fixture(scope="module")
def demo(ingested, ingested_artifacts):
    cfg, circuits = ingested
    with _Env(NEURFLOW_STORE_DATABASE=cfg.database, NEURFLOW_ARTIFACT_DIR=str(ingested_artifacts)):
        yield cfg, circuits


@pytest.mark.slow
def test_demo_overview_and_circuit(demo):
    cfg, circuits = demo
    at = page("overview")
    body = texts(at)
    for c in circuits.values():
        assert f"{c.class_index} · {c.class_name}" in body
    assert n_images(at) >= len(circuits)  # real crops of every class
    c = circuits[0]
    at = page("circuit", model=c.model, **{"class": 0, "level": "group"})
    assert {"/".join(o.split(" · ")[:2]) for o in at.selectbox(key="w:group").options} == _short_groups(c)
    at = page("circuit", model=c.model, **{"class": 0, "level": "neuron"})
    assert at.get("plotly_chart")


@pytest.mark.slow
def test_demo_compare_tshirt_and_shirt(demo):
    cfg, circuits = demo
    a, b = circuits[0], circuits[6]
    at = page("compare", model=a.model, classes="0,6")
    overlap = next(df for df in frames(at) if "shared by all" in df.columns)
    assert list(overlap["depth"]) == [d for d in a.depths if d > 0]
    for _, row in overlap.iterrows():
        d = int(row["depth"])
        assert row["Jaccard"] == pytest.approx(jaccard(set(a.critical(d)), set(b.critical(d))), abs=1e-4)


# --------------------------------------------------------------------------- graph labels
def _boxes(plan, rows, width_px):
    """Label boxes (x0, x1, y0, y1) in pixels under the plan's own text-width model."""
    from app.graphs import X_SPAN, text_px

    out = []
    for depth, row in rows.items():
        for i, n in enumerate(row):
            if n.id not in plan.text:
                continue
            x = (i + 0.5) / len(row) * width_px / X_SPAN
            w = text_px(plan.text[n.id], 9 if plan.place[n.id] == "inside" else 10)
            y = {"inside": 0, "above": -1, "below": 1}[plan.place[n.id]] + 10 * depth
            out.append((x - w / 2, x + w / 2, y, n.id))
    return out


@pytest.mark.parametrize("per_row", [3, 20, 45, 90, 400])
def test_graph_labels_never_overlap(per_row):
    """However many neurons a row holds, no two labels of one band (inside, above, below) share
    pixels, markers never touch, and a row too dense for any label is labelled on hover only,
    except the selected node."""
    from app.graphs import GNode, label_plan

    rows = {d: [GNode(id=f"{d}/{c}", depth=d, label=str(1000 + c), size=20) for c in range(per_row)] for d in range(3)}
    selected = "1/0"
    plan = label_plan(rows, width_px=900, selected=selected)
    boxes = sorted(_boxes(plan, rows, 900), key=lambda b: (b[2], b[0]))
    for a, b in zip(boxes, boxes[1:]):
        if a[2] == b[2]:
            assert a[1] <= b[0], (a, b)
    spacing = 900 / 1.06 / per_row
    assert all(size <= max(5.0, 0.85 * spacing) for size in plan.size.values())
    assert selected in plan.text
    if per_row >= 400:
        assert plan.hidden == 3 * per_row - 1 and set(plan.text) == {selected}
    if per_row <= 20:
        assert plan.hidden == 0


def test_group_labels_fall_back_to_short_names():
    from app.graphs import GNode, label_plan

    row = {1: [GNode(id=str(i), depth=1, label=f"g{i} a long group label from the LLM", short=f"g{i}") for i in range(12)]}
    plan = label_plan(row, width_px=900)
    assert plan.hidden == 0 and all(t == f"g{i}" for i, t in ((int(k), v) for k, v in plan.text.items()))
    plan = label_plan({1: row[1][:2]}, width_px=900)
    assert plan.text["0"].startswith("g0 a long group label")


def test_cluster_order_keeps_families_together():
    """The heatmap's cluster order (on the library's Jaccard matrix) keeps two families of similar
    classes each in one contiguous run."""
    from app.data import cluster_order
    from ingest.read.similarity import jaccard_matrix

    rnd = random.Random(0)
    fam_a, fam_b = list(range(0, 30)), list(range(40, 70))
    rows = [{"class_index": c, "channels": sorted(rnd.sample(fam_a if c % 2 else fam_b, 20))} for c in range(12)]
    sim = jaccard_matrix(rows)
    parity = [sim.classes[i] % 2 for i in cluster_order(sim.jaccard)]
    assert parity[:6] == [parity[0]] * 6 and parity[6:] == [1 - parity[0]] * 6


# --------------------------------------------------------------------------- faithfulness tables
def _eval_rows():
    """Rows shaped as `read_evaluations` returns them: EvalRow fields, NaN stored as null."""
    import math

    from neurflow.evaluation import EvalRow

    rows = []
    for cls, (core, rnd) in {0: (0.10, 0.80), 1: (0.30, 0.90)}.items():
        made = [
            EvalRow("fidelity", "layer3", 1, "mask", "single", core, random_mean=rnd, baseline=0.95, size=4.0, n=50),
            EvalRow("fidelity", "layer3", 1, "retain", "single", 0.9, random_mean=0.0, baseline=0.95, size=4.0, n=50),
            EvalRow("optimality", "logits", 0, "mask", "core_vs_random", 0.9, random_mean=0.8, baseline=0.3, size=4.0,
                    lower="layer3"),
            EvalRow("edge_weight", "logits", 0, "sum", "pearson", -0.7 - 0.1 * cls, size=20.0, lower="layer3"),
            EvalRow("edge_weight", "logits", 0, "mean", "pearson", float("nan"), size=20.0, lower="layer3"),
        ]
        for r in made:
            d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.to_dict().items()}
            rows.append({**d, "class_index": cls, "class_name": f"cls{cls}", "circuit": f"c{cls}"})
    return rows


def test_faithfulness_tables_have_no_none_cells():
    """Class means per layer and layer pair, the ratios the claims are about, and "–" (never
    None / nan) where a kind has no number."""
    from app.views.faithfulness import fidelity_table, pair_table, stored_rows

    rows = _eval_rows()
    fid = fidelity_table(rows, {"layer3": 16})
    row = fid.iloc[0]
    drop, drop_rnd = 0.95 - 0.20, 0.95 - 0.85
    assert row["critical / channels"] == "4.0 / 16"
    assert row["mask: drop core"] == f"{drop:.3f}" and row["mask: drop random"] == f"{drop_rnd:.3f}"
    assert row["mask ratio"] == f"{drop / drop_rnd:.1f}×"
    assert row["retain ratio"] == "≥ 100×"  # random sets keep nothing: 0.9 / 0.001, capped
    pairs = pair_table(rows)
    p = pairs.iloc[0]
    assert p["layer pair"] == "logits ← layer3" and p["Pearson, sum"] == "-0.75" and p["Pearson, mean"] == "–"
    assert p["optimality: random sets beaten"] == "0.90" and p["overlap core / random"] == "0.30 / 0.80"
    assert p["Spearman, sum"] == "–"  # not measured
    for table in (fid, pairs, stored_rows(rows)):
        cells = {str(v) for v in table.to_numpy().ravel()}
        assert not cells & {"None", "nan", "NaN", "<NA>"}, cells


def test_faithfulness_page_reads_stored_evaluations_without_torch():
    """The page reads stored rows through `ingest.read.evaluation_rows` (the library's query and choice
    of circuit): importing the app's data layer must not import torch (1.6-1.8 s on a first visit)."""
    import subprocess
    import sys

    code = "import sys, app.data, ingest.read.evaluation_rows; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(MAIN).parent.parent))
    assert out.stdout.strip() == "False"


def test_faithfulness_page_says_how_its_numbers_were_measured():
    """The demo stores lighter evaluations than `neurflow evaluate`'s defaults: the page says which."""
    from app.views.faithfulness import measured_with

    rows = [{"kind": "fidelity", "draws": 3, "n": 100}, {"kind": "fidelity", "draws": 3, "n": 98},
            {"kind": "optimality", "draws": 3, "n": 3}]
    text = measured_with(rows)
    assert "3 random draws on 98-100 held-out images per class (2 rows)" in text
    assert measured_with([{"kind": "optimality", "draws": 5, "n": 3}]) == "Measured settings: no fidelity rows."
