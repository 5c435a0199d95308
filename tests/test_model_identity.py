"""A model is its weights, not its file: the uid's hash is taken from the loaded tensors, so one
set of weights saved in any accepted form is one model and any changed tensor another; the
default weights in another file are still the default model; and a store written when the hash
was the file's keeps its models and circuits readable as they were."""

from __future__ import annotations

import torch
import torchvision

from ingest.queries.library import run_query
from ingest.write.writer import circuit_status, write_circuit
from neurflow.images import file_hash
from neurflow.models import fashion_resnet, sources
from neurflow.models.fashion_cnn import FashionCNN
from neurflow.models.registry import load_model
from tests.fixtures_store import make_circuit, model_info


def _forms(state: dict[str, torch.Tensor], folder) -> list[str]:
    """The same tensors saved the ways `read_state_dict` accepts."""
    paths = [folder / f"{n}.pt" for n in ("plain", "dataparallel", "model_key", "legacy")]
    torch.save(state, paths[0])
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, paths[1])
    torch.save({"model": state, "optimizer": {"lr": 0.1}}, paths[2])
    torch.save(state, paths[3], _use_new_zipfile_serialization=False)
    return [str(p) for p in paths]


def test_one_weights_set_saved_three_ways_is_one_model_and_a_changed_tensor_another(tmp_path):
    torch.manual_seed(3)
    state = FashionCNN().state_dict()
    paths = _forms(state, tmp_path)
    assert len({file_hash(p) for p in paths}) == len(paths)  # four different files
    loaded = [load_model("fashion-cnn", p) for p in paths]
    assert len({m.uid for m in loaded}) == 1 and len({m.weights_sha256 for m in loaded}) == 1
    sha = sources.state_hash(loaded[0].module)
    assert loaded[0].weights_sha256 == sha and loaded[0].uid == f"fashion-cnn-{sha[:8]}"
    uids = {loaded[0].uid}
    for key in ("fc.bias", "block1.1.running_var"):  # a parameter, a buffer: one element each
        changed = {k: v.clone() for k, v in state.items()}
        changed[key].view(-1)[0] += 1e-3
        torch.save(changed, tmp_path / "changed.pt")
        uids.add(load_model("fashion-cnn", str(tmp_path / "changed.pt")).uid)
    assert len(uids) == 3


def test_torchvision_and_factory_models_are_their_weights_too(tmp_path):
    torch.manual_seed(4)
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    paths = _forms(state, tmp_path)
    assert len({load_model("torchvision:mobilenet_v3_small", p).uid for p in paths[:2]}) == 1
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),\n"
        "                               torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
    )
    own = load_model(f"{tmp_path / 'net.py'}:make")
    saved = _forms(own.module.state_dict(), tmp_path)
    given = {load_model(f"{tmp_path / 'net.py'}:make", p).uid for p in saved[:2]}
    assert given == {own.uid}  # the factory's own weights, given as a file in two forms: the same model


def test_the_default_weights_in_another_file_are_the_default_model(tmp_path):
    default = load_model("fashion-resnet", train_if_missing=False)
    assert default.uid == "fashion-resnet" and default.weights_sha256 == sources.state_hash(default.module)
    assert default.weights_sha256 != fashion_resnet.WEIGHTS_SHA256  # the file's bytes are checked, not the identity
    state = torch.load(fashion_resnet.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    again = load_model("fashion-resnet", str(tmp_path / "ckpt.pt"))
    assert (again.uid, again.weights_sha256) == ("fashion-resnet", default.weights_sha256)


def test_a_store_written_with_file_hash_uids_keeps_them_readable(store, tmp_path):
    """What the README promises for stores written before: the old model (uid and weights_sha256
    of the file) and its circuits stay as they were, beside the model an ingest writes now."""
    torch.manual_seed(5)
    path = tmp_path / "w.pt"
    torch.save(FashionCNN().state_dict(), path)
    fsha, loaded = file_hash(str(path)), load_model("fashion-cnn", str(path))
    old_uid = f"fashion-cnn-{fsha[:8]}"
    assert loaded.uid != old_uid
    old = make_circuit(2, model=old_uid)
    write_circuit(store, old, model_info=dict(model_info(old_uid), weights_sha256=fsha))
    before = store.counts()
    new = make_circuit(2, model=loaded.uid)
    write_circuit(store, new, model_info=dict(model_info(loaded.uid), weights_sha256=loaded.weights_sha256))
    assert circuit_status(store, old.uid) == circuit_status(store, new.uid) == "complete"
    models = {r["model"]: r for r in run_query(store, "models")}
    assert set(models) == {old_uid, loaded.uid} and models[old_uid]["complete_circuits"] == 1
    assert [r["circuit"] for r in run_query(store, "overview", model=old_uid)] == [old.uid]
    shas = {r["uid"]: r["sha"] for r in store.run("MATCH (m:Model) RETURN m.uid AS uid, m.weights_sha256 AS sha")}
    assert shas == {old_uid: fsha, loaded.uid: loaded.weights_sha256}
    # the old model's nodes are untouched: everything it had, it still has
    after = store.counts()
    assert all(after[k] >= v for k, v in before.items())
