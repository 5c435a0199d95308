"""Image decoding (`neurflow.images.decode_picture`) through every real path a file takes, and the
upscaling record of `ImageSet`.

Each PIL mode a user meets is written as a real file (PNG, TIFF or PGM: whichever keeps the mode)
holding a known gradient, then read through the ImageFolder loader (`load_images`), through
`neurflow debug FILE` (`load_query_image`) and through the debug page's upload
(`image_from_bytes`); all three must give the same pixels, and those pixels must be the values
the rules in `decode_picture` promise.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ingest.jobs.image_debugging import image_from_bytes, load_query_image
from neurflow.datasets import images_from_tensor, load_images
from neurflow.images import LUMA, ImageSet, NeurflowInputError, decode_picture
from neurflow.models import get_spec

FASHION = get_spec("fashion-cnn")  # 1 channel, 28 x 28, composites alpha onto black
RESNET = get_spec("resnet50")  # 3 channels, 224 x 224, composites alpha onto white
SPECS = [FASHION, RESNET]


def _denorm(pixels: torch.Tensor, spec) -> torch.Tensor:
    c = pixels.shape[-3]
    return pixels * torch.tensor(spec.std).view(c, 1, 1) + torch.tensor(spec.mean).view(c, 1, 1)


def _ramp(size: int) -> np.ndarray:
    """(size, size) float64 ramp 0 -> 1 from the left column to the right one."""
    return np.tile(np.linspace(0.0, 1.0, size), (size, 1))


def _top_half(size: int) -> np.ndarray:
    """(size, size) bool: True on the upper half of the rows (where the test images are transparent)."""
    mask = np.zeros((size, size), dtype=bool)
    mask[: size // 2] = True
    return mask


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb * np.asarray(LUMA)).sum(axis=-1)


# Every case builds `(PIL image, file suffix, expected gray (S, S) or None, expected RGB (S, S, 3) or None)`
# for a model of side S and its channel count; `expected` is what the model must receive, in [0, 1].
def _case_1(s, ch):
    bits = _ramp(s) >= 0.5
    return Image.fromarray(bits), ".png", bits.astype(float)


def _case_L(s, ch):
    v = np.round(_ramp(s) * 255).astype(np.uint8)
    return Image.fromarray(v, "L"), ".png", v / 255


def _case_I16_png(s, ch):  # the reported defect: was read as all white
    v = np.round(_ramp(s) * 65535).astype(np.uint16)
    picture = Image.fromarray(v)
    assert picture.mode == "I;16"
    return picture, ".png", v / 65535


def _case_I16B_tif(s, ch):
    v = np.round(_ramp(s) * 65535).astype(np.uint16)
    picture = Image.frombytes("I;16B", (s, s), v.astype(">u2").tobytes())
    return picture, ".tif", v / 65535


def _case_I16_pgm(s, ch):  # Pillow reads 16-bit PGM as mode I
    v = np.round(_ramp(s) * 65535).astype(np.uint16)
    return Image.fromarray(v), ".pgm", v / 65535


def _case_I_16bit_values(s, ch):
    v = np.round(_ramp(s) * 65535).astype(np.int32)
    return Image.fromarray(v, "I"), ".tif", v / 65535


def _case_I_32bit_values(s, ch):  # beyond 16 bits: scaled over its own range
    v = (np.round(_ramp(s) * 4000) * 100000 - 150_000_000).astype(np.int32)
    return Image.fromarray(v, "I"), ".tif", (v - v.min()) / (v.max() - v.min())


def _case_F_unit(s, ch):  # already in [0, 1]: kept
    v = _ramp(s).astype(np.float32)
    return Image.fromarray(v, "F"), ".tif", v.astype(np.float64)


def _case_F_wide(s, ch):  # outside [0, 1]: min-max scaled
    v = (_ramp(s) * 700 - 200).astype(np.float32)
    return Image.fromarray(v, "F"), ".tif", (v.astype(np.float64) + 200) / 700


def _palette():
    """256 colours (i, i // 2, 255 - i): a palette image whose colour depends on its index."""
    return np.stack([np.arange(256), np.arange(256) // 2, 255 - np.arange(256)], axis=1).astype(np.uint8)


def _case_P(s, ch):  # palette with index 0 transparent
    index = np.round(_ramp(s) * 255).astype(np.uint8)
    picture = Image.fromarray(index, "P")
    picture.putpalette(_palette().flatten().tolist())
    picture.info["transparency"] = 0
    rgb = _palette()[index] / 255.0
    alpha = (index != 0).astype(float)[..., None]
    bg = 0.0 if ch == 1 else 1.0
    return picture, ".png", rgb * alpha + bg * (1 - alpha)


def _case_PA(s, ch):
    index = np.round(_ramp(s) * 255).astype(np.uint8)
    alpha = np.where(_top_half(s), 0, 255).astype(np.uint8)
    picture = Image.frombytes("PA", (s, s), np.stack([index, alpha], axis=-1).tobytes())
    picture.putpalette(_palette().flatten().tolist())
    a = (alpha / 255.0)[..., None]
    bg = 0.0 if ch == 1 else 1.0
    return picture, ".tif", _palette()[index] / 255.0 * a + bg * (1 - a)


def _case_LA(s, ch):  # transparent pixels still hold gray values: they must not show
    gray = np.round(_ramp(s) * 255).astype(np.uint8)
    alpha = np.where(_top_half(s), 0, 255).astype(np.uint8)
    picture = Image.fromarray(np.stack([gray, alpha], axis=-1), "LA")
    bg = 0.0 if ch == 1 else 1.0
    return picture, ".png", np.where(_top_half(s), bg, gray / 255.0)


def _case_RGB(s, ch):
    r = np.round(_ramp(s) * 255).astype(np.uint8)
    rgb = np.stack([r, 255 - r, np.full_like(r, 128)], axis=-1)
    return Image.fromarray(rgb, "RGB"), ".png", rgb / 255.0


def _case_RGBA(s, ch):
    r = np.round(_ramp(s) * 255).astype(np.uint8)
    alpha = np.where(_top_half(s), 0, 255).astype(np.uint8)
    rgba = np.stack([r, 255 - r, np.full_like(r, 128), alpha], axis=-1)
    bg = 0.0 if ch == 1 else 1.0
    a = (alpha / 255.0)[..., None]
    return Image.fromarray(rgba, "RGBA"), ".png", rgba[..., :3] / 255.0 * a + bg * (1 - a)


def _case_CMYK(s, ch):  # cyan ramp, no black: R = 1 - C, G = B = 1 (PIL's conversion)
    c = np.round(_ramp(s) * 255).astype(np.uint8)
    z = np.zeros_like(c)
    picture = Image.fromarray(np.stack([c, z, z, z], axis=-1), "CMYK")
    return picture, ".tif", np.stack([1 - c / 255.0, np.ones(c.shape), np.ones(c.shape)], axis=-1)


def _case_YCbCr(s, ch):  # gray ramp in YCbCr (neutral chroma): R = G = B = Y
    y = np.round(_ramp(s) * 255).astype(np.uint8)
    picture = Image.fromarray(np.stack([y, np.full_like(y, 128), np.full_like(y, 128)], axis=-1), "YCbCr")
    return picture, ".tif", y / 255.0


CASES = {
    "1": _case_1, "L": _case_L, "I;16 png": _case_I16_png, "I;16B tif": _case_I16B_tif, "I pgm 16-bit": _case_I16_pgm,
    "I 16-bit values": _case_I_16bit_values, "I 32-bit values": _case_I_32bit_values, "F in [0,1]": _case_F_unit,
    "F wide range": _case_F_wide, "P transparent": _case_P, "PA": _case_PA, "LA": _case_LA, "RGB": _case_RGB,
    "RGBA": _case_RGBA, "CMYK": _case_CMYK, "YCbCr": _case_YCbCr,
}  # fmt: skip


def _expected(values: np.ndarray, channels: int) -> torch.Tensor:
    """(C, S, S) tensor of a gray (S, S) or colour (S, S, 3) expectation for a `channels` model."""
    if values.ndim == 3 and channels == 1:
        values = _luma(values)[..., None]
    elif values.ndim == 2:
        values = np.repeat(values[..., None], channels, axis=-1)
    return torch.from_numpy(values.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_decodes_the_same_in_ingestion_and_debugging(tmp_path, case, spec):
    s, ch = spec.input_size, spec.in_channels
    picture, suffix, values = CASES[case](s, ch)
    mode = picture.mode
    path = tmp_path / "data" / spec.class_names[0].replace("/", "_") / f"image{suffix}"  # class 0, by name
    path.parent.mkdir(parents=True)
    picture.save(path)
    with Image.open(path) as back:  # the file really holds the mode under test (Pillow may widen I;16B)
        assert back.mode == mode or (mode, back.mode) in {("I;16", "I")}, back.mode
    expected = _expected(values, ch)

    ingested = load_images(str(tmp_path / "data"), spec, class_index=0)
    assert ingested.pixels.shape == (1, ch, s, s)
    decoded = _denorm(ingested.pixels[0], spec)
    assert torch.allclose(decoded, expected, atol=2e-4), (case, float((decoded - expected).abs().max()))
    assert ingested.original_sizes == [(s, s)]

    cli, _, _ = load_query_image(str(path), spec)  # `neurflow debug FILE`
    upload = image_from_bytes(path.read_bytes(), spec)  # the debug page's upload
    assert torch.equal(cli, ingested.pixels[0]) and torch.equal(upload, ingested.pixels[0])


def test_16_bit_gradient_is_a_gradient_not_white(tmp_path):
    """The reported defect: a 0..65535 ramp was read as min = mean = max = 1.0."""
    for spec in SPECS:
        path = tmp_path / spec.name / spec.class_names[0].replace("/", "_") / "ramp16.png"  # class 0, by name
        path.parent.mkdir(parents=True)
        Image.fromarray(np.round(_ramp(28) * 65535).astype(np.uint16)).save(path)
        for pixels in (load_images(str(tmp_path / spec.name), spec).pixels[0], image_from_bytes(path.read_bytes(), spec)):
            x = _denorm(pixels, spec)
            assert float(x.min()) < 0.01 and float(x.max()) > 0.99 and abs(float(x.mean()) - 0.5) < 0.02


def test_alpha_background_is_black_for_gray_models_and_white_for_colour_ones():
    clear = Image.new("RGBA", (4, 4), (200, 30, 60, 0))  # fully transparent red
    assert torch.equal(decode_picture(clear, 1), torch.zeros(1, 4, 4))
    assert torch.equal(decode_picture(clear, 3), torch.ones(3, 4, 4))
    assert torch.equal(decode_picture(clear, 3, background=0.0), torch.zeros(3, 4, 4))
    half = Image.new("LA", (2, 2), (200, 128))
    a = 128 / 255
    assert torch.allclose(decode_picture(half, 1), torch.full((1, 2, 2), 200 / 255 * a), atol=1e-6)
    assert torch.allclose(decode_picture(half, 3), torch.full((3, 2, 2), 200 / 255 * a + (1 - a)), atol=1e-6)


def test_premultiplied_modes_in_memory():
    """`La` and `RGBa` cannot be saved to a file, but a caller may hand them in."""
    la = Image.new("LA", (2, 2), (100, 255)).convert("La")
    assert torch.allclose(decode_picture(la, 1), torch.full((1, 2, 2), 100 / 255), atol=1e-6)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 255, 255)).convert("RGBa")
    assert torch.allclose(decode_picture(rgba, 1), torch.full((1, 2, 2), LUMA[2]), atol=1e-6)


def test_float_image_without_finite_values_is_one_error_line(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), "F").save(path)
    with pytest.raises(NeurflowInputError) as err:
        image_from_bytes(path.read_bytes(), FASHION)
    assert "no finite pixel values" in str(err.value) and "uploaded image" in str(err.value) and "\n" not in str(err.value)
    nan_spots = np.where(_ramp(8) > 0.5, np.nan, _ramp(8) * 4).astype(np.float32)  # finite part 0..2: scaled
    out = decode_picture(Image.fromarray(nan_spots, "F"), 1)
    assert float(out.max()) == pytest.approx(1.0) and torch.isfinite(out).all()


def test_bad_upload_and_channel_count_are_one_error_line():
    with pytest.raises(NeurflowInputError) as err:
        image_from_bytes(b"not an image at all", FASHION)
    assert "cannot read the uploaded image" in str(err.value) and "\n" not in str(err.value)
    assert "it is a text file, not an image file" in str(err.value)
    with pytest.raises(NeurflowInputError, match="4-channel model"):
        decode_picture(Image.new("RGB", (2, 2)), 4)


# ------------------------------------------------------------------------------ upscaling
def _save_gray(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)


def test_folder_images_record_sizes_and_say_which_were_upscaled(tmp_path):
    root = tmp_path / "d"
    _save_gray(root / "T-shirt_top" / "a_big.png", (40, 30))  # shorter side 30 >= 28: downscaled
    _save_gray(root / "T-shirt_top" / "b_small.png", (20, 12))  # 12 < 28: upscaled, but >= the 7 px smallest crop
    _save_gray(root / "T-shirt_top" / "c_tiny.png", (6, 5))  # 5 < 7: smaller than the smallest crop
    images = load_images(str(root), FASHION, class_index=0)
    assert images.original_sizes == [(40, 30), (20, 12), (6, 5)]
    assert images.upscaled() == [1, 2]
    note = images.upscale_note((1.0, 0.5, 0.25))
    assert note.startswith("2 of 3 images were smaller than the model's 28x28 input and were upscaled")
    assert "smallest 6x5, enlarged 5.6x" in note
    assert "1 of them is smaller than the smallest crop (7 px at granularity 0.25)" in note
    assert "smallest crop" not in images.upscale_note((1.0,))  # at granularity 1 the crop is the input itself
    sub = images.subset([0, 2])
    assert sub.original_sizes == [(40, 30), (6, 5)] and sub.upscaled() == [1]
    assert images.subset([0]).upscale_note() is None
    assert images.subset([2]).upscale_note().startswith("1 of 1 images was smaller than the model's 28x28 input and was upscaled")


def test_fashion_mnist_is_upscaled_only_for_a_larger_model():
    assert load_images("fashion-mnist", FASHION, class_index=0, limit=3).upscale_note() is None
    big = load_images("fashion-mnist", RESNET, class_index=0, limit=3)
    assert big.original_sizes == [(28, 28)] * 3
    note = big.upscale_note()
    assert note.startswith("3 of 3 images were smaller than the model's 224x224 input") and "enlarged 8x" in note
    assert "3 of them are smaller than the smallest crop (56 px at granularity 0.25)" in note


def test_in_memory_images_record_sizes_and_hand_built_sets_stay_silent():
    images = images_from_tensor(torch.rand(2, 1, 14, 20), FASHION, labels=[0, 0])
    assert images.original_sizes == [(20, 14), (20, 14)] and images.upscaled() == [0, 1]
    plain = ImageSet(torch.zeros(2, 1, 28, 28), ["a", "b"], [0, 0])
    assert plain.original_sizes == [] and plain.upscale_note() is None
    with pytest.raises(NeurflowInputError, match="one \\(width, height\\) per image"):
        ImageSet(torch.zeros(2, 1, 28, 28), ["a", "b"], [0, 0], original_sizes=[(28, 28)])


def test_a_fashion_mnist_image_uploaded_as_16_bit_is_the_data_set_image(tmp_path):
    """The debug page's reported case: a 16-bit upload must reach the model as the image it is
    (before, it arrived blank and the model still answered "Bag 77.7%")."""
    from neurflow.datasets import read_fashion_mnist

    raw = read_fashion_mnist("test")[0][0]
    reference, _, _ = load_query_image("fashion-mnist:test:0", FASHION)
    png16, png8 = tmp_path / "x16.png", tmp_path / "x8.png"
    Image.fromarray(raw.astype(np.uint16) * 257).save(png16)  # 257 * 255 = 65535: the same levels in 16 bits
    Image.fromarray(raw, "L").save(png8)
    for path in (png16, png8):
        assert torch.allclose(image_from_bytes(path.read_bytes(), FASHION), reference, atol=1e-5)


# ------------------------------------------------------------------------- bounded decoding
def _png_bytes(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("raw, says", [
    (b"", "it is an empty file, not an image file"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "it is a PDF document, not an image file"),
    (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "it is an SVG drawing (vector graphics, not pixels)"),
    (b"PK\x03\x04\x14\x00\x00\x00", "it is a ZIP archive"),
    (bytes(range(200)), "it is a binary file of no image format PIL reads"),
])
def test_a_file_that_is_not_an_image_is_named_for_what_it_is(raw, says):
    with pytest.raises(NeurflowInputError) as err:
        image_from_bytes(raw, RESNET)
    message = str(err.value)
    assert says in message and "\n" not in message and "convert" not in message, message


def test_a_truncated_png_or_jpeg_says_truncated_never_convert_to_png(tmp_path):
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), "RGB")
    png = _png_bytes(picture)
    with pytest.raises(NeurflowInputError) as err:
        image_from_bytes(png[: len(png) // 2], RESNET)  # the pixel data cut
    assert "PNG file of 48 x 64 pixels whose pixel data ends early (truncated file)" in str(err.value)
    assert "convert" not in str(err.value)
    with pytest.raises(NeurflowInputError, match=r"starts as a PNG file but its header is cut short or damaged"):
        image_from_bytes(png[:30], RESNET)  # the header cut
    jpeg = io.BytesIO()
    picture.save(jpeg, "JPEG")
    path = tmp_path / "Coat" / "cut.jpg"
    path.parent.mkdir()
    path.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    with pytest.raises(NeurflowInputError) as err:
        load_images(str(tmp_path), FASHION, class_index=4)  # ingestion says which file
    assert f"image {path}: JPEG file of 48 x 64 pixels whose pixel data ends early" in str(err.value)


def test_too_many_pixels_is_refused_from_the_header_with_the_size_and_the_budget(tmp_path, monkeypatch):
    from neurflow.images import MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV, max_megapixels

    assert max_megapixels() == MAX_MEGAPIXELS == 50
    wide = _png_bytes(Image.new("L", (10000, 5001), 3))  # 50.01 MP: just over the budget
    with pytest.raises(NeurflowInputError) as err:
        image_from_bytes(wide, FASHION)
    assert str(err.value) == ("the uploaded image has too many pixels (10000 x 5001 = 50.0 MP, over the budget of 50 MP): "
                              f"scale it down (or set {MAX_MEGAPIXELS_ENV} higher on a machine with the memory)")
    path = tmp_path / "Coat" / "big.png"  # ingestion and `neurflow debug FILE` refuse it the same way
    path.parent.mkdir()
    path.write_bytes(wide)
    for read in (lambda: load_images(str(tmp_path), FASHION, class_index=4), lambda: load_query_image(str(path), FASHION)):
        with pytest.raises(NeurflowInputError, match=rf"image {path} has too many pixels \(10000 x 5001"):
            read()
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "51")
    assert image_from_bytes(wide, FASHION).shape == (1, 28, 28)
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "0.001")  # 1000 pixels
    with pytest.raises(NeurflowInputError, match=r"\(40 x 30 = 0.0 MP, over the budget of 0.001 MP\)"):
        image_from_bytes(_png_bytes(Image.new("L", (40, 30))), FASHION)
    monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "lots")
    with pytest.raises(NeurflowInputError, match="NEURFLOW_MAX_MEGAPIXELS='lots' is not a positive number"):
        image_from_bytes(wide, FASHION)


def _one_colour_png(path, width: int, height: int, value: int) -> None:
    """An 8-bit gray PNG written row by row (PIL would hold all the pixels in memory first)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate, row = zlib.compressobj(9), b"\x00" + bytes([value]) * width  # filter type 0, then the pixels
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


_UPLOAD_RSS = """
import resource, sys
from ingest.jobs.image_debugging import image_from_bytes
from neurflow.images import NeurflowInputError
from neurflow.models import get_spec
spec = get_spec("fashion-resnet")
raw = open(sys.argv[1], "rb").read()
image_from_bytes(open(sys.argv[2], "rb").read(), spec)  # a small upload first: every import and code path warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    image_from_bytes(raw, spec)
    print("decoded")
except NeurflowInputError as exc:
    print("refused:", exc)
print("grew_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("side", [12000, 20000])
def test_a_huge_one_colour_png_upload_is_refused_within_300_mb(tmp_path, side):
    """The reported case: a 140 KB PNG of 12000 x 12000 pixels of one colour took the app from 1.1 to
    2.8 GB; at 20000 x 20000 (400 MP) PIL itself refused it, and the message said "convert it to PNG".
    The page's own function (`image_from_bytes`) runs in a fresh process whose peak memory is
    measured around the upload."""
    import subprocess
    import sys
    from pathlib import Path

    big = tmp_path / "big.png"
    _one_colour_png(big, side, side, 200)
    assert big.stat().st_size < 600_000  # its size is read back by the refusal below
    small = tmp_path / "small.png"
    Image.new("L", (28, 28), 200).save(small)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _UPLOAD_RSS, str(big), str(small)], cwd=root, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert f"refused: the uploaded image has too many pixels ({side} x {side} = {side * side / 1e6:.1f} MP" in out, out
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 300, out
