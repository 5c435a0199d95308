"""What a visitor of the app must not be able to do (issue 11), under Streamlit's AppTest on a
real embedded store: start Cypher from a link, edit labels unless the app was started to allow
it, bring Markdown into the page through a label, or probe the server's files through the debug
page's weights field."""

from __future__ import annotations

import argparse
import json
import uuid

import pytest

pytest.importorskip("streamlit")

from app import data  # noqa: E402
from ingest.store.embedded import create_database, drop_database  # noqa: E402
from ingest.jobs.labelling import set_manual_label  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import write_circuit  # noqa: E402
from tests.fixtures_store import make_circuit, model_info  # noqa: E402
from tests.test_app_pages import LAYERS, _Env, _thumb, frames, page, shown  # noqa: E402

M = "testnet"
OWN = "fashion-cnn@deadbeef"  # a model ingested with weights of its own: the debug page asks for the file
LABEL = "**bold** :red[red] $x^2$ [link](https://example.com/x) <b>html</b>"


@pytest.fixture(scope="module")
def world(store_server, tmp_path_factory):
    """(config, {class: Circuit} of testnet, artifact folder); group layer3/g0 of class 1 has LABEL."""
    name = "sec_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    cfg = store_server.with_database(name)
    artifacts = tmp_path_factory.mktemp("sec-artifacts")
    circuits = {c: make_circuit(c, layers=LAYERS, class_name=f"cls{c}") for c in (0, 1)}
    own = make_circuit(0, model=OWN, layers=LAYERS, class_name="tshirt")
    with Store(cfg) as store:
        ensure_schema(store)
        for c in circuits.values():
            write_circuit(store, c, artifacts, thumbnails=_thumb)
        write_circuit(store, own, artifacts, thumbnails=_thumb, model_info={**model_info(OWN), "name": "fashion-cnn"})
        assert set_manual_label(store, f"{circuits[1].uid}/layer3/g0", LABEL) == 1
    with _Env(NEURFLOW_STORE_DATABASE=name, NEURFLOW_ARTIFACT_DIR=str(artifacts)):
        yield cfg, circuits, artifacts
    drop_database(store_server, name)


def _markup(at) -> str:
    """Everything the page rendered as Markdown."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [h.value for h in at.header]
    parts += [h.value for h in at.subheader] + [i.value for i in at.info] + [s.value for s in at.success]
    parts += [w.value for w in at.warning] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def _plain(at) -> str:
    return "\n".join(str(t.value) for t in at.text)


# --------------------------------------------------------------------------- console links
def test_a_link_does_not_run_edited_cypher(world):
    at = page("console", q="custom", run=1, cy_custom="MATCH (c:Circuit) RETURN count(c) AS circuits")
    assert not frames(at), "the link's Cypher ran without a click"
    assert "not a library query" in _markup(at)
    assert at.text_area(key="w:cy_custom").value == "MATCH (c:Circuit) RETURN count(c) AS circuits"  # shown
    at.button(key="run_query").click().run()
    assert not at.exception
    assert frames(at)[0]["circuits"].tolist() == [3]


def test_a_link_does_not_run_an_edited_library_query(world):
    at = page("console", q="models", run=1, cy_models="MATCH (c:Circuit) RETURN count(c) AS circuits")
    assert not frames(at) and "not a library query" in _markup(at)


def test_a_link_runs_an_unedited_library_query(world):
    at = page("console", q="models", run=1)
    assert sorted(frames(at)[0]["model"]) == sorted([M, OWN])


# --------------------------------------------------------------------------- label edits
def test_labels_are_read_only_unless_the_app_allows_edits(world, monkeypatch):
    monkeypatch.delenv("NEURFLOW_APP_LABEL_EDITS", raising=False)
    at = page("labels", model=M, **{"class": 1})
    assert not [b for b in at.button if "Save label" in b.label]
    assert not [t for t in at.text_input if t.key and t.key.startswith("label_text_")]
    assert "--allow-label-edits" in _markup(at)
    monkeypatch.setenv("NEURFLOW_APP_LABEL_EDITS", "0")
    at = page("labels", model=M, **{"class": 1})
    assert not [b for b in at.button if "Save label" in b.label]


def test_labels_can_be_edited_when_the_app_allows_it(world, monkeypatch):
    cfg, circuits, _ = world
    monkeypatch.setenv("NEURFLOW_APP_LABEL_EDITS", "1")
    at = page("labels", model=M, **{"class": 0})
    picked = at.selectbox(key="w:group").value
    box = next(t for t in at.text_input if t.key and t.key.startswith("label_text_"))
    box.set_value("*stripes* [x](https://example.com/y)")
    next(b for b in at.button if "Save label" in b.label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    with Store(cfg) as store:
        rows = store.run("MATCH (g:Group {uid: $u}) RETURN g.label AS label", u=f"{circuits[0].uid}/{picked}")
    assert rows == [{"label": "*stripes* [x](https://example.com/y)"}]
    assert "*stripes* [x](https://example.com/y)" in _plain(at) and "example.com/y" not in _markup(at)
    data.clear_caches()


def test_neurflow_app_flag_sets_the_label_edit_variable(monkeypatch):
    from cli.app_commands import LABEL_EDITS_ENV, streamlit_env
    from cli.main import build_parser

    monkeypatch.setenv(LABEL_EDITS_ENV, "1")  # inherited from the shell: does not count
    args = build_parser().parse_args(["app"])
    assert not args.allow_label_edits and streamlit_env(args)[LABEL_EDITS_ENV] == "0"
    args = build_parser().parse_args(["app", "--allow-label-edits", "--port", "8601"])
    assert args.allow_label_edits and streamlit_env(args)[LABEL_EDITS_ENV] == "1"
    assert streamlit_env(argparse.Namespace())[LABEL_EDITS_ENV] == "0"


# --------------------------------------------------------------------------- labels as plain text
def test_circuit_page_shows_a_label_as_plain_text(world):
    at = page("circuit", model=M, **{"class": 1, "level": "group", "group": "layer3/g0", "w": 0, "k": 64})
    assert LABEL in _plain(at)
    markup = _markup(at)
    assert "example.com" not in markup and "**bold**" not in markup and ":red[" not in markup
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    shown = json.dumps([[t.get("text"), t.get("hovertext")] for t in fig["data"]], ensure_ascii=False)
    assert "<b>html</b>" not in shown and "&lt;b&gt;html&lt;/b&gt;" in shown  # plotly's HTML subset stays text


def test_neuron_detail_shows_a_group_label_as_plain_text(world):
    _, circuits, _ = world
    ch, _concept = circuits[1].groups(1)[0][0]
    at = page("circuit", model=M, **{"class": 1, "level": "neuron", "neuron": f"layer3/{ch}", "w": 0, "k": 64})
    assert f"Group label: {LABEL}" in _plain(at)
    assert "example.com" not in _markup(at)


def test_labels_page_search_and_picker_show_no_markup(world, monkeypatch):
    monkeypatch.setenv("NEURFLOW_APP_LABEL_EDITS", "1")
    at = page("labels", model=M, **{"class": 1, "group": "layer3/g0"})
    assert LABEL in frames(at)[0]["label"].tolist()  # a table cell: text
    assert "example.com" not in _markup(at)


# --------------------------------------------------------------------------- debug page weights path
def test_weights_field_does_not_tell_which_files_exist(world, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.pt").write_bytes(b"not a state dict")
    monkeypatch.setenv("NEURFLOW_CACHE", str(cache))
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    messages = {}
    for raw in (str(outside), str(tmp_path / "missing.pt"), "/etc/hostname", "/no/such/file.pt", "../secret.txt",
                str(cache / ".." / "secret.txt")):  # fmt: skip
        at = page("debug", model=OWN, weights=raw)
        messages[raw] = [w.value for w in at.warning] + [e.value for e in at.error]
    assert len({tuple(m) for m in messages.values()}) == 1, messages  # one neutral answer for all of them
    assert "model folder" in messages["/etc/hostname"][0]
    # a file inside the model folder is taken (and here refused as a state dict, by the loader)
    for raw in ("mine.pt", str(cache / "mine.pt")):
        at = page("debug", model=OWN, weights=raw)
        errors = [shown(e.value) for e in at.error]
        assert any("Cannot load the model" in e and "mine.pt" in e and str(cache) not in e for e in errors), errors


def test_console_graph_shows_store_text_as_text_not_markup():
    from app.graphs import result_figure

    fig = result_figure({"a": {"labels": ["Group"], "props": {"label": "<b>x</b><a href=y>", "uid": "a"}}}, [])
    node = fig.data[-1]
    assert "<b>" not in node.text[0] and "&lt;b&gt;" in node.text[0]
    assert "<a href" not in node.hovertext[0] and "&lt;a href" in node.hovertext[0]
