"""The debug page loads any model the store has circuits of, or says in one line why not (issue 22):
a ``file.py:factory`` model ingested without ``--weights`` (the factory's own weights, found from the
stored model name), a seeded ``--random-init`` model, a factory model ingested with ``--weights``
(its file asked for), a factory whose file is gone (one line naming the file, not its folder)."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("streamlit")

from app.views.debug import how_to_load  # noqa: E402
from ingest.store.embedded import create_database, drop_database  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import write_circuit  # noqa: E402
from neurflow.models.registry import load_model  # noqa: E402
from tests.fixtures_store import make_circuit, model_info  # noqa: E402
from tests.test_app_pages import LAYERS, _Env, _thumb, page, shown  # noqa: E402
from tests.test_model_sources import FACTORY  # noqa: E402


def _messages(at) -> list[str]:
    return [shown(m.value) for m in (*at.info, *at.warning, *at.error)]


@pytest.fixture(scope="module")
def models(store_server, tmp_path_factory):
    """{role: model uid}: circuits of a factory model (own weights), the same factory ingested with
    other weights, a factory whose file is gone, and a random-init registry model."""
    work = tmp_path_factory.mktemp("factory")
    (work / "tiny_net.py").write_text(FACTORY)
    factory = load_model(f"{work / 'tiny_net.py'}:make")
    gone = work / "gone" / "old_net.py"
    uids = {"factory": factory.uid, "factory_weights": factory.uid.rsplit("-", 1)[0] + "-0badc0de",
            "gone": "old_net:make-12345678", "random": "fashion-cnn-random"}  # fmt: skip
    names = {"factory": factory.spec.name, "factory_weights": factory.spec.name, "gone": f"{gone}:make",
             "random": "fashion-cnn"}  # fmt: skip
    name = "dbg_" + uuid.uuid4().hex[:10]
    create_database(store_server, name)
    artifacts = tmp_path_factory.mktemp("dbg-artifacts")
    with Store(store_server.with_database(name)) as store:
        ensure_schema(store)
        for role, uid in uids.items():
            write_circuit(store, make_circuit(0, model=uid, layers=LAYERS, class_name="cat"), artifacts,
                          thumbnails=_thumb, model_info={**model_info(uid), "name": names[role]})  # fmt: skip
    with _Env(NEURFLOW_STORE_DATABASE=name, NEURFLOW_ARTIFACT_DIR=str(artifacts)):
        yield uids, work
    drop_database(store_server, name)


def test_a_factory_model_ingested_without_weights_loads_from_its_file(models):
    uids, work = models
    at = page("debug", model=uids["factory"])
    assert not _messages(at), _messages(at)  # loaded, and the uid is the stored one (else an error says so)
    assert not [t for t in at.text_input if t.key == "w:weights"]  # no weights file asked for
    assert "Upload an image to debug." in [c.value for c in at.caption]


def test_a_random_init_model_loads_seeded(models):
    uids, _ = models
    at = page("debug", model=uids["random"], src="upload")
    assert not _messages(at) and "Upload an image to debug." in [c.value for c in at.caption]


def test_a_factory_model_ingested_with_weights_asks_for_its_file(models):
    uids, _ = models
    at = page("debug", model=uids["factory_weights"])
    assert [t for t in at.text_input if t.key == "w:weights"]
    assert any("was ingested with its own weights" in m for m in _messages(at))


def test_a_factory_whose_file_is_gone_says_so_in_one_line_without_its_folder(models):
    uids, work = models
    at = page("debug", model=uids["gone"])
    (msg,) = _messages(at)
    assert msg == (f"{uids['gone']} was built by the factory old_net.py:make, whose file is not on this server: "
                   "the debug page runs the factory the model was ingested with.")  # fmt: skip
    assert str(work) not in msg and "\n" not in msg


def test_how_to_load_each_kind():
    assert how_to_load("fashion-resnet", "fashion-resnet") == (True, False)  # the default weights
    assert how_to_load("fashion-resnet-0badc0de", "fashion-resnet") == (False, False)  # own weights: the file first
    assert how_to_load("torchvision:resnet18-random", "torchvision:resnet18") == (True, True)
    assert "does not know" in how_to_load("x-1", "no such model")
