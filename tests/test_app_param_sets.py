"""The app reads one parameter set at a time and says which; links with values that do not exist
are reported; Retry after a store outage keeps the view.  AppTest on a real embedded store."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("streamlit")

from ingest.store.embedded import create_database, drop_database, free_port  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import write_circuit  # noqa: E402
from neurflow.circuit import Params  # noqa: E402
from tests.fixtures_store import make_circuit  # noqa: E402
from tests.test_app_pages import LAYERS, _Env, frames, page, shown, texts  # noqa: E402

P1 = Params(tau=3, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)
P2 = Params(tau=2, k=4, ig_steps=8, granularities=(1.0, 0.5), num_representatives=2)


@pytest.fixture(scope="module")
def mixed(store_server, tmp_path_factory):
    """Classes 0, 1, 2 under P1; classes 1 and 3 under P2, written later (class 1's latest is P2)."""
    name = "aps_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    cfg = store_server.with_database(name)
    p1 = {c: make_circuit(c, params=P1, layers=LAYERS, class_name=f"cls{c}") for c in (0, 1, 2)}
    p2 = {c: make_circuit(c, params=P2, layers=LAYERS, class_name=f"cls{c}") for c in (1, 3)}
    with Store(cfg) as store:
        ensure_schema(store)
        for c in [*p1.values(), *p2.values()]:
            write_circuit(store, c)
    with _Env(NEURFLOW_STORE_DATABASE=name, NEURFLOW_ARTIFACT_DIR=str(tmp_path_factory.mktemp("aps"))):
        yield p1, p2
    drop_database(store_server, name)


def test_default_parameter_set_is_the_one_with_most_classes(mixed):
    p1, p2 = mixed
    at = page("compare", classes="0,1")
    ps = p1[0].identity.param_set
    assert at.selectbox(key="w:params").value == ps
    assert "tau 3, k 4, 8 IG steps, layers layer3 > layer2 > layer1" in texts(at)
    overlap = next(df for df in frames(at) if "shared by all" in df.columns)
    a, b = p1[0], p1[1]  # class 1 under P1, not its newer P2 circuit
    for _, row in overlap.iterrows():
        d = int(row["depth"])
        sa, sb = set(a.critical(d)), set(b.critical(d))
        assert row["Jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb), abs=1e-4)


def test_a_class_without_the_set_is_named_with_the_reason(mixed):
    p1, p2 = mixed
    at = page("compare", classes="0,3")
    warning = " ".join(shown(w.value) for w in at.warning)
    assert f"No complete circuit under parameter set {p1[0].identity.param_set}" in warning and "3 · cls3" in warning
    assert p2[3].identity.param_set in warning and "one parameter set" in warning


def test_picking_the_other_set_reads_it(mixed):
    p1, p2 = mixed
    ps = p2[1].identity.param_set
    at = page("compare", params=ps, classes="1,3")
    assert at.selectbox(key="w:params").value == ps
    overlap = next(df for df in frames(at) if "shared by all" in df.columns)
    a, b = p2[1], p2[3]
    for _, row in overlap.iterrows():
        d = int(row["depth"])
        sa, sb = set(a.critical(d)), set(b.critical(d))
        assert row["Jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb), abs=1e-4)


def test_unknown_link_values_are_reported_not_silently_replaced(mixed):
    at = page("circuit", **{"class": 99, "level": "bogus", "params": "latest"})
    warning = " ".join(shown(w.value) for w in at.warning)
    assert "do not exist here" in warning
    for part in ("class='99'", "level='bogus'", "params='latest'"):
        assert part in warning, warning
    at = page("circuit", **{"class": 0})
    assert not any("do not exist here" in w.value for w in at.warning)


def test_retry_after_an_outage_keeps_the_link(store_server):
    with _Env(NEURFLOW_STORE_URI=f"bolt://127.0.0.1:{free_port()}", NEURFLOW_STORE_USER="neo4j", NEURFLOW_STORE_PASSWORD="x"):
        at = page("compare", classes="0,3", layer="layer2")
        assert at.button(key="retry_store")
        at.button(key="retry_store").click().run()
        assert at.query_params["classes"] == "0,3" and at.query_params["layer"] == "layer2"
        assert at.query_params["page"] == "compare"
