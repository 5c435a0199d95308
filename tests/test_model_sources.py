"""Any model from the command line (issue 12, item 1): ``torchvision:<arch>`` with a state-dict file,
``path/to/file.py:factory``, their default layers and uids, bad model files as one error line;
and, end to end into the embedded store, classes given by name for folders named by synset id.

Real torchvision architectures with random weights (nothing is downloaded), generated images in
tmp folders, a tiny factory model at 32 px for the store runs."""

from __future__ import annotations

import json
import os
import textwrap
import uuid

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ingest.store.embedded import create_database
from ingest.store.connection import Store
from cli.main import main as cli_main
from neurflow.errors import NeurflowInputError
from neurflow.models import sources
from neurflow.models.registry import build_model, load_model

TINY = ["--tau", "2", "--k", "4", "--ig-steps", "2", "--max-images", "2", "--all-images", "--quiet", "--device", "cpu"]

FACTORY = textwrap.dedent(
    '''
    """A user's own tiny classifier, described by attributes NeurFlow reads."""
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            self.bn = nn.BatchNorm2d(cout)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))


    class Net(nn.Module):
        input_size = 32
        class_names = ["cat", "dog", "bird"]

        def __init__(self):
            super().__init__()
            self.stem = Block(3, 8, 1)
            self.block1 = Block(8, 8, 2)
            self.block2 = Block(8, 16, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.pool(self.block2(self.block1(self.stem(x)))).flatten(1))


    def make():
        torch.manual_seed(0)
        return Net()


    def not_a_model():
        return {"fc": torch.zeros(3, 16)}


    def broken():
        raise RuntimeError("checkpoint server unreachable")


    def mlp():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        m.input_size = 8
        m.in_channels = 3
        return m
    '''
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A factory file, state dicts of a torchvision architecture outside the registry, and folders."""
    root = tmp_path_factory.mktemp("sources")
    (root / "tiny_net.py").write_text(FACTORY)
    torch.manual_seed(0)
    mnv3 = torchvision.models.mobilenet_v3_small(weights=None)
    state = mnv3.state_dict()
    torch.save(state, root / "mnv3.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 7}, root / "mnv3_ckpt.pt")
    rng = np.random.default_rng(0)

    def images(folder, n=2, side=48):
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")

    for sub in ("n07920052", "n02085620", "n01443537", "tabby"):  # espresso, Chihuahua, goldfish by id; tabby by name
        images(root / "photos" / sub)
    for sub in ("Dog", "bird"):  # the factory's classes 1 and 2, by name
        images(root / "pets" / sub, side=32)
    return root


# ------------------------------------------------------------------------- torchvision:<arch>
def test_torchvision_architecture_from_a_state_dict_and_a_wrapped_checkpoint(work):
    plain = load_model("torchvision:mobilenet_v3_small", str(work / "mnv3.pt"))
    wrapped = load_model("torchvision:mobilenet_v3_small", str(work / "mnv3_ckpt.pt"))
    assert plain.spec.name == "torchvision:mobilenet_v3_small" and plain.spec.arch == "torchvision.mobilenet_v3_small"
    assert plain.uid.startswith("torchvision:mobilenet_v3_small-") and len(plain.uid.rsplit("-", 1)[1]) == 8
    assert plain.spec.input_size == 224 and plain.spec.in_channels == 3 and plain.spec.num_classes == 1000
    assert plain.spec.layers == ("features.12", "features.11", "features.10", "features.9")
    assert plain.class_names[967] == "espresso" and plain.spec.class_ids[967] == "n07920052"
    a, b = plain.module.state_dict(), wrapped.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # "module." stripped, same weights
    x = torch.rand(1, 3, 224, 224)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    reference.load_state_dict(torch.load(work / "mnv3.pt", weights_only=True))
    assert torch.allclose(plain.module(x), reference.eval()(x), atol=1e-5)


def test_torchvision_head_size_and_defaults(tmp_path):
    torch.manual_seed(1)
    five = torchvision.models.resnet18(weights=None, num_classes=5)
    torch.save(five.state_dict(), tmp_path / "r18.pt")
    loaded = load_model("torchvision:resnet18", str(tmp_path / "r18.pt"))
    assert loaded.spec.num_classes == 5 and loaded.class_names == [f"class {i}" for i in range(5)]
    assert loaded.spec.layers == ("layer4.1", "layer4.0", "layer3.1", "layer3.0")
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\n")  # beside the weights, as for registry models
    assert load_model("torchvision:resnet18", str(tmp_path / "r18.pt")).class_names == list("abcde")
    random = load_model("torchvision:resnet18", random_init=True)
    assert random.uid == "torchvision:resnet18-random" and random.spec.num_classes == 1000
    again = build_model("torchvision:resnet18")  # what a Ray worker rebuilds from the spec's name
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in random.module.state_dict().items())
    assert load_model("torchvision:inception_v3", random_init=True).spec.input_size == 299  # torchvision's metadata


def test_default_layers_are_whole_blocks_below_the_classifier():
    def layers(arch):
        return sources.pick_layers(sources.build_torchvision(arch, 1000).eval(), 3, 224)

    # SqueezeNet's last ReLU is the class-score map (its mean is the logits): not a layer below them
    assert layers("squeezenet1_1") == ("features.12", "features.11", "features.10", "features.9")
    assert layers("googlenet") == ("inception5b", "inception5a", "inception4e", "inception4d")  # the registry's list


@pytest.mark.parametrize(
    "name, message",
    [
        ("torchvision:resnt18", r"unknown torchvision architecture 'resnt18': did you mean torchvision:resnet18"),
        ("resnet18", r"torchvision's resnet18 is --model torchvision:resnet18"),
        ("resnet5O", r"unknown model 'resnet5O': did you mean resnet50\?"),
        ("tiny_net.py", r"name the factory function too, as path/to/file.py:function"),
    ],
)
def test_unknown_model_names(name, message):
    with pytest.raises(NeurflowInputError, match=message):
        load_model(name)


def test_torchvision_needs_weights_and_a_matching_state_dict(work, tmp_path):
    with pytest.raises(NeurflowInputError, match=r"has no bundled weights and nothing is downloaded: pass weights=FILE "
                                                 r"\(.*\) or random_init=True$"):
        load_model("torchvision:mobilenet_v3_small")  # from Python: the arguments; on the command line: the flags
    from neurflow.errors import cli_spelling

    with cli_spelling(), pytest.raises(NeurflowInputError, match=r"pass --weights FILE \(.*\) or --random-init$"):
        load_model("torchvision:mobilenet_v3_small")
    state = torch.load(work / "mnv3.pt", weights_only=True)
    state.pop("features.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(NeurflowInputError) as err:
        load_model("torchvision:mobilenet_v3_small", str(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "does not match torchvision:mobilenet_v3_small" in msg
    assert "1 missing keys (features.0.0.weight)" in msg and "1 unexpected keys (extra.weight)" in msg


# ------------------------------------------------------------------------ file.py:factory
def test_factory_model_reads_its_attributes(work, tmp_path):
    loaded = load_model(f"{work / 'tiny_net.py'}:make")
    spec = loaded.spec
    assert spec.name == f"{(work / 'tiny_net.py').resolve()}:make"
    assert (spec.input_size, spec.in_channels, spec.num_classes) == (32, 3, 3)
    assert spec.mean == sources.IMAGENET_MEAN and loaded.class_names == ["cat", "dog", "bird"]
    assert spec.layers == ("block2", "block1", "stem")
    assert loaded.uid == f"tiny_net:make-{sources.state_hash(loaded.module)[:8]}"
    assert loaded.uid == load_model(f"{work / 'tiny_net.py'}:make").uid  # seeded factory: same weights, same uid
    assert not any(getattr(m, "inplace", False) for m in loaded.module.modules())  # hooks see what layers returned
    # --weights replaces the factory's own; the uid hashes the file
    state = {k: v + 1 if v.is_floating_point() else v for k, v in loaded.module.state_dict().items()}
    torch.save(state, tmp_path / "tuned.pt")
    tuned = load_model(f"{work / 'tiny_net.py'}:make", str(tmp_path / "tuned.pt"))
    assert torch.equal(tuned.module.fc.bias, state["fc.bias"]) and tuned.uid != loaded.uid
    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\nwasp\n")
    assert load_model(f"{work / 'tiny_net.py'}:make", class_names=str(names)).class_names == ["ant", "bee", "wasp"]


@pytest.mark.parametrize(
    "factory, message",
    [
        ("missing", r"tiny_net.py has no function 'missing' \(it defines .*make.*\): define missing\(\) returning an nn.Module"),
        ("not_a_model", r"tiny_net.py:not_a_model\(\) returned a dict, not a torch.nn.Module"),
        ("broken", r"tiny_net.py:broken\(\) raised RuntimeError: checkpoint server unreachable"),
    ],
)
def test_bad_factories(work, factory, message):
    with pytest.raises(NeurflowInputError, match=message):
        load_model(f"{work / 'tiny_net.py'}:{factory}")


def test_bad_model_files(tmp_path):
    with pytest.raises(NeurflowInputError, match="model file .*nope.py not found"):
        load_model(f"{tmp_path / 'nope.py'}:make")
    (tmp_path / "syntax.py").write_text("def make(:\n")
    with pytest.raises(NeurflowInputError, match=r"model file .*syntax.py line 1: "):
        load_model(f"{tmp_path / 'syntax.py'}:make")
    (tmp_path / "imports.py").write_text("import no_such_package_here\n")
    with pytest.raises(NeurflowInputError, match="failed to import: ModuleNotFoundError"):
        load_model(f"{tmp_path / 'imports.py'}:make")


def test_a_model_without_feature_maps_asks_for_layers(work, capsys):
    assert load_model(f"{work / 'tiny_net.py'}:mlp").spec.layers == ()
    code = cli_main(["circuit", "--model", f"{work / 'tiny_net.py'}:mlp", "--data", str(work / "pets"), "--class", "0",
                     "--class-names", str(_write(work / "mlp_names.txt", "Dog\nbird\nfish\nfox\n")), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {(work / 'tiny_net.py').resolve()}:mlp has no default layers "
                                 "(no feature-map blocks found): pass --layers"]


def test_circuit_command_takes_a_class_name(work, capsys):
    code = cli_main(["circuit", "--model", f"{work / 'tiny_net.py'}:make", "--data", str(work / "pets"), "--class", "DOG",
                     "--layers", "block2,block1", *TINY])
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert code == 0 and summary["class"] == "1 (dog)"


def test_ray_payload_rebuilds_models_from_any_source(work):
    """A Ray worker rebuilds the driver's model from its spec name and state dict (no weights file)."""
    from ingest.jobs.ray_executor import ModelPayload

    x = torch.rand(2, 3, 32, 32)
    for loaded in (load_model(f"{work / 'tiny_net.py'}:make"), load_model("torchvision:mobilenet_v3_small", str(work / "mnv3.pt"))):
        again = ModelPayload.from_loaded(loaded).load("cpu")
        assert again.uid == loaded.uid and again.spec == loaded.spec and again.spec.class_names == loaded.spec.class_names
        assert torch.equal(again.module(x), loaded.module(x))


def _write(path, text):
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- into the store
def _ingest(db: str, artifacts, *args: str) -> int:
    env = {"NEURFLOW_STORE_DATABASE": db, "NEURFLOW_ARTIFACT_DIR": str(artifacts)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return cli_main(["ingest", *TINY, *args])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _stored(cfg):
    with Store(cfg) as s:
        classes = s.run("MATCH (m:Model)-[:HAS_CLASS]->(cl:Class)-[:HAS_CIRCUIT]->(c:Circuit {status: 'complete'}) "
                        "RETURN m.uid AS model, cl.index AS index, cl.name AS name, c.data_source AS data ORDER BY index")
        return [dict(r) for r in classes], s.counts()


@pytest.fixture(scope="module")
def factory_store(store_server, work, tmp_path_factory):
    """A fresh database holding the factory model's circuits of the classes that have a folder."""
    db = "src_" + uuid.uuid4().hex[:8]
    create_database(store_server, db)
    code = _ingest(db, tmp_path_factory.mktemp("art"), "--model", f"{work / 'tiny_net.py'}:make",
                   "--data", str(work / "pets"), "--classes", "all", "--layers", "block2,block1")
    assert code == 0
    return store_server.with_database(db)


def test_factory_model_ingested_for_every_class_with_a_folder(factory_store, work):
    rows, _ = _stored(factory_store)
    assert [(r["index"], r["name"]) for r in rows] == [(1, "dog"), (2, "bird")]  # "Dog" and "bird"; no "cat" folder
    assert {r["model"] for r in rows} == {load_model(f"{work / 'tiny_net.py'}:make").uid}
    assert rows[0]["model"].startswith("tiny_net:make-")


def test_torchvision_model_ingested_by_class_name_from_synset_folders(store_server, work, tmp_path):
    db = "src_" + uuid.uuid4().hex[:8]
    create_database(store_server, db)
    code = _ingest(db, tmp_path, "--model", "torchvision:mobilenet_v3_small", "--weights", str(work / "mnv3_ckpt.pt"),
                   "--data", str(work / "photos"), "--classes", "espresso,Tabby", "--layers", "features.12,features.11")
    assert code == 0
    rows, _ = _stored(store_server.with_database(db))
    assert [(r["index"], r["name"]) for r in rows] == [(281, "tabby"), (967, "espresso")]
    uid = load_model("torchvision:mobilenet_v3_small", str(work / "mnv3_ckpt.pt")).uid
    assert {r["model"] for r in rows} == {uid} and {r["data"] for r in rows} == {f"folder:{(work / 'photos').resolve()}"}
    # and it shows in the app: the overview lists both classes by name, the compare page compares them
    pytest.importorskip("streamlit")
    from tests.test_app_pages import _Env, frames, page, texts

    with _Env(NEURFLOW_STORE_DATABASE=db, NEURFLOW_ARTIFACT_DIR=str(tmp_path)):
        body = texts(page("overview", model=uid))
        assert "281 · tabby" in body and "967 · espresso" in body
        at = page("compare", model=uid, classes="281,967")
        assert any("shared by all" in df.columns for df in frames(at))


@pytest.mark.parametrize("case", ["mismatched_keys", "not_a_state_dict", "factory_missing", "not_a_module",
                                  "unmatched_folder", "unknown_class_name", "class_without_folder"])
def test_bad_input_is_one_line_exit_2_and_the_store_unchanged(case, factory_store, work, tmp_path, capsys):
    _, before = _stored(factory_store)
    model = f"{work / 'tiny_net.py'}:make"
    args = ["--model", model, "--data", str(work / "pets"), "--classes", "all"]
    expect = ""
    if case == "mismatched_keys":
        state = torch.load(work / "mnv3.pt", weights_only=True)
        state["classifier.9.weight"] = state.pop("classifier.3.weight")
        torch.save(state, tmp_path / "w.pt")
        args = ["--model", "torchvision:mobilenet_v3_small", "--weights", str(tmp_path / "w.pt"), "--data", str(work / "photos")]
        expect = "1 missing keys (classifier.3.weight); 1 unexpected keys (classifier.9.weight)"
    elif case == "not_a_state_dict":
        torch.save([1, 2, 3], tmp_path / "w.pt")
        args = ["--model", "torchvision:mobilenet_v3_small", "--weights", str(tmp_path / "w.pt"), "--data", str(work / "photos")]
        expect = "is not a state dict"
    elif case == "factory_missing":
        args[1] = f"{work / 'tiny_net.py'}:build"
        expect = "has no function 'build'"
    elif case == "not_a_module":
        args[1] = f"{work / 'tiny_net.py'}:not_a_model"
        expect = "returned a dict, not a torch.nn.Module"
    elif case == "unmatched_folder":
        data = tmp_path / "pets"
        for sub in ("dog", "birds", "kitten"):
            (data / sub).mkdir(parents=True)
            Image.new("RGB", (32, 32), (9, 9, 9)).save(data / sub / "0.png")
        args[3] = str(data)
        expect = "sub-folder 'birds' of"
        assert "close matches: bird (2)" in _one_error(case, args, capsys, factory_store, before, expect)
        return
    elif case == "unknown_class_name":
        args[5] = "dog,brid"
        expect = "unknown class 'brid': close matches: bird (2)"
    elif case == "class_without_folder":
        args[5] = "cat"
        expect = "class cat (0) has no images in"
    _one_error(case, args, capsys, factory_store, before, expect)


def _one_error(case, args, capsys, cfg, before, expect) -> str:
    code = _ingest(cfg.database, "/nonexistent-artifacts", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (case, err)
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], (case, err)
    assert _stored(cfg)[1] == before
    return err[0]
