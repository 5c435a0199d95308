"""Classes by name (issue 12, item 2): the shipped synset ids, class-name files, `--classes`
parsing, and image sub-folders matched to the model's classes by name or synset id, never by
their sorted position.  No model forward here: the specs only give names and input sizes."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from PIL import Image

from neurflow.classes import (
    ClassNames,
    imagenet_categories,
    imagenet_synsets,
    normalise,
    read_class_names,
    select_classes,
)
from neurflow.datasets import FASHION_MNIST_CLASSES, classes_of_run, data_classes, folder_class_map, load_images
from neurflow.errors import NeurflowInputError
from neurflow.models import get_spec

FASHION = get_spec("fashion-cnn")
RESNET = get_spec("resnet50")  # ImageNet-1k names and synset ids; only its 224 px input size is used here
SMALL_RGB = replace(RESNET, input_size=16)  # the same classes, cheaper pictures
IMAGENET = ClassNames(imagenet_categories(), imagenet_synsets())


def _png(path, color=(90, 120, 150), size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


# ------------------------------------------------------------------------------ synset ids
def test_the_1000_synset_ids_ship_in_class_order():
    ids = imagenet_synsets()
    assert len(ids) == 1000 and len(set(ids)) == 1000 and list(ids) == sorted(ids)  # torchvision numbers them sorted
    # independent witnesses: torchvision's Imagenette table (wnid -> name) and well-known indices
    from torchvision.datasets.imagenette import Imagenette

    names = imagenet_categories()
    for wnid, aliases in Imagenette._WNID_TO_CLASS.items():
        assert names[ids.index(wnid)] in aliases, wnid
    assert (ids[151], names[151]) == ("n02085620", "Chihuahua")
    assert (ids[967], names[967]) == ("n07920052", "espresso")
    assert (ids[281], names[281]) == ("n02123045", "tabby")


def test_registry_specs_carry_their_class_names():
    assert FASHION.class_names == tuple(FASHION_MNIST_CLASSES) and FASHION.class_ids == ()
    assert RESNET.class_names[:2] == ("tench", "goldfish") and RESNET.class_ids[:2] == ("n01440764", "n01443537")
    assert "class_names" not in repr(RESNET)  # 1000 names stay out of reprs and error messages


# ------------------------------------------------------------------------------- look-ups
def test_names_are_compared_without_case_or_punctuation():
    assert normalise("T-shirt/top") == normalise("T-shirt_top") == normalise("tshirt top") == "tshirttop"
    fashion = ClassNames(FASHION_MNIST_CLASSES)
    assert fashion.find("T-shirt_top") == 0 and fashion.find("ankle-boot") == 9 and fashion.find("ANKLE_BOOT") == 9
    assert fashion.find("kitten") is None
    assert IMAGENET.find("n02085620") == 151 and IMAGENET.find("N02085620") == 151
    assert IMAGENET.find("great_white_shark") == 2 and IMAGENET.find("Chihuahua") == 151


def test_a_name_two_classes_share_is_ambiguous_unless_exact():
    # ImageNet has "Cardigan" (the corgi, 264) and "cardigan" (the sweater, 474)
    assert IMAGENET.find("Cardigan") == 264 and IMAGENET.find("cardigan") == 474
    with pytest.raises(NeurflowInputError) as err:
        IMAGENET.find("CARDIGAN")
    msg = str(err.value)
    assert "ambiguous" in msg and "Cardigan (264, n02113186)" in msg and "cardigan (474, n02963159)" in msg


def test_select_classes_takes_indices_ranges_names_and_all():
    assert select_classes("espresso, 0-2,Chihuahua,n01443537", IMAGENET) == [0, 1, 2, 151, 967]
    assert select_classes("all", ClassNames(FASHION_MNIST_CLASSES)) == list(range(10))
    assert select_classes("all", IMAGENET, available=[967, 151]) == [151, 967]
    assert select_classes("Chihuahua", IMAGENET, available=[967, 151]) == [151]
    with pytest.raises(NeurflowInputError, match=r"unknown class 'chihuahuah': close matches: Chihuahua \(151, n02085620\)"):
        select_classes("chihuahuah", IMAGENET)
    with pytest.raises(NeurflowInputError, match=r"class tabby \(281, n02123045\) has no images in /data: "
                                                 r"add a sub-folder named 'tabby' or 'n02123045'"):
        select_classes("tabby", IMAGENET, available=[967], where="/data")
    with pytest.raises(NeurflowInputError, match="descending range 9-2: write 2-9"):
        select_classes("9-2", IMAGENET)
    with pytest.raises(NeurflowInputError, match=r"class index 1000 out of range: the model has classes 0..999"):
        select_classes("998-1000", IMAGENET)
    with pytest.raises(NeurflowInputError, match="the model has no class names: pass class_names=FILE"):
        select_classes("cat", ClassNames([f"class {i}" for i in range(3)]))  # from Python: the argument
    from neurflow.errors import cli_spelling

    with cli_spelling(), pytest.raises(NeurflowInputError, match="the model has no class names: pass --class-names FILE"):
        select_classes("cat", ClassNames([f"class {i}" for i in range(3)]))  # on the command line: the flag


# ------------------------------------------------------------------------ class-name files
@pytest.mark.parametrize(
    "text, names, ids",
    [
        ("cat\n\n dog \nbird\n", ["cat", "dog", "bird"], []),
        ('["cat", "dog", "bird"]', ["cat", "dog", "bird"], []),
        ('{"1": "dog", "0": "cat", "2": "bird"}', ["cat", "dog", "bird"], []),
        ('{"0": ["n01", "cat"], "1": ["n02", "dog"], "2": ["n03", "bird"]}', ["cat", "dog", "bird"], ["n01", "n02", "n03"]),
        ('{"dog": 1, "cat": 0, "bird": 2}', ["cat", "dog", "bird"], []),  # torchvision ImageFolder.class_to_idx
    ],
)
def test_class_names_file_forms(tmp_path, text, names, ids):
    path = tmp_path / "names.txt"
    path.write_text(text)
    assert read_class_names(path) == (names, ids)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "lists no class names"),
        ('{"0": "cat", "2": "bird"}', "has no class 1: indices must be 0..1"),
        ('["cat", 3]', "a JSON list must hold names"),
        ('{"cat": 0', "is not valid JSON"),
        ('{"x": "cat"}', "key 'x' is not a class index"),
    ],
)
def test_bad_class_names_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "names.json"
    path.write_text(text)
    with pytest.raises(NeurflowInputError, match=message) as err:
        read_class_names(path)
    assert "\n" not in str(err.value)
    with pytest.raises(NeurflowInputError, match="not found"):
        read_class_names(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- image folders
@pytest.fixture
def imagenet_folder(tmp_path):
    """Three classes under synset ids and one under its name; colours tell the classes apart."""
    root = tmp_path / "photos"
    _png(root / "n07920052" / "a.png", (10, 0, 0))  # espresso, 967
    _png(root / "n02085620" / "a.png", (20, 0, 0))  # Chihuahua, 151
    _png(root / "n02085620" / "b.png", (21, 0, 0))
    _png(root / "n01443537" / "a.png", (30, 0, 0))  # goldfish, 1
    _png(root / "Tabby" / "a.png", (40, 0, 0))  # tabby, 281: by name, any case
    return root


def test_folders_are_matched_by_synset_id_or_name_not_position(imagenet_folder):
    assert folder_class_map(imagenet_folder, SMALL_RGB) == {1: "n01443537", 151: "n02085620", 281: "Tabby", 967: "n07920052"}
    # the reported defects: class 967 of a 4-folder data set was "out of range", and the cats
    # (sorted sub-folder 1 of 4) were stored as goldfish (class 1)
    espresso = load_images(str(imagenet_folder), SMALL_RGB, class_index=967)
    assert espresso.labels == [967] and espresso.sources == [str(imagenet_folder / "n07920052" / "a.png")]
    cats = load_images(str(imagenet_folder), SMALL_RGB, class_index=281)
    assert cats.labels == [281]
    everything = load_images(str(imagenet_folder), SMALL_RGB)
    assert everything.labels == [1, 151, 151, 281, 967]  # model class indices, in class order
    assert everything.origin == f"folder:{imagenet_folder.resolve()}"  # circuit identity still reads the folder
    with pytest.raises(NeurflowInputError, match=r"no sub-folder of .* holds class tench \(0, n01440764\): "
                                                 r"add a sub-folder named 'tench' or 'n01440764'"):
        load_images(str(imagenet_folder), SMALL_RGB, class_index=0)
    assert data_classes(str(imagenet_folder), SMALL_RGB) == [1, 151, 281, 967]


def test_fashion_names_with_a_slash_match_folder_spellings(tmp_path):
    root = tmp_path / "fashion"
    _png(root / "T-shirt_top" / "a.png")
    _png(root / "ankle boot" / "a.png")
    _png(root / "SANDAL" / "a.png")
    assert folder_class_map(root, FASHION) == {0: "T-shirt_top", 5: "SANDAL", 9: "ankle boot"}
    assert load_images(str(root), FASHION, class_index=9).labels == [9]


def test_an_unmatched_folder_is_an_error_listing_close_matches(imagenet_folder):
    _png(imagenet_folder / "chihuahuas" / "a.png")
    with pytest.raises(NeurflowInputError) as err:
        load_images(str(imagenet_folder), SMALL_RGB, class_index=967)
    msg = str(err.value)
    assert "sub-folder 'chihuahuas'" in msg and "matches no class" in msg and "close matches: Chihuahua (151, n02085620)" in msg
    assert "\n" not in msg


def test_two_folders_of_one_class_are_an_error(imagenet_folder):
    _png(imagenet_folder / "espresso" / "a.png")
    with pytest.raises(NeurflowInputError, match=r"sub-folders 'espresso' and 'n07920052' .* are both class espresso \(967"):
        load_images(str(imagenet_folder), SMALL_RGB, class_index=967)


def test_a_model_without_names_takes_the_folders_only_when_it_has_one_per_class(tmp_path):
    nameless = replace(FASHION, name="my-net", num_classes=3, class_names=())
    root = tmp_path / "three"
    for i, name in enumerate(["ant", "bee", "wasp"]):
        _png(root / name / "a.png", (i * 50, 0, 0))
    assert folder_class_map(root, nameless) == {0: "ant", 1: "bee", 2: "wasp"}  # ImageFolder's numbering in training
    assert load_images(str(root), nameless, class_index=2).labels == [2]
    _png(root / "moth" / "a.png")
    with pytest.raises(NeurflowInputError, match=r"my-net has no class names and .* has 4 class sub-folders for its 3 "
                                                 r"classes: pass class_names=FILE"):
        load_images(str(root), nameless, class_index=0)


def test_classes_of_run_adopts_the_folder_names_of_a_nameless_model(tmp_path):
    spec = replace(FASHION, name="my-net", num_classes=2, class_names=())
    loaded = SimpleNamespace(spec=spec, class_names=["class 0", "class 1"])
    root = tmp_path / "two"
    _png(root / "bee" / "a.png")
    _png(root / "ant" / "a.png")
    assert classes_of_run(loaded, str(root), "bee") == [1]
    assert loaded.class_names == ["ant", "bee"] and loaded.spec.class_names == ("ant", "bee")
    assert classes_of_run(loaded, str(root), "all") == [0, 1]
    with pytest.raises(NeurflowInputError, match="--class takes one class"):
        classes_of_run(loaded, str(root), "all", option="--class", single=True)
    assert classes_of_run(SimpleNamespace(spec=FASHION, class_names=list(FASHION_MNIST_CLASSES)), "fashion-mnist",
                          "Coat,sneaker") == [4, 7]


def test_class_names_file_json_dump_roundtrip(tmp_path):
    """The names a model's classes.txt/--class-names gives are what folders are matched against."""
    path = tmp_path / "names.json"
    path.write_text(json.dumps({str(i): ["n%08d" % i, name] for i, name in enumerate(["cat", "dog"])}))
    names, ids = read_class_names(path)
    lookup = ClassNames(names, ids)
    assert lookup.find("n00000001") == 1 and lookup.find("Cat") == 0
