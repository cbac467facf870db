"""Tests of i0tscore.images on real image files written with Pillow, arrays and tensors."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from i0tscore.images import ImageLoadError, content_key, load_rgb

EXAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "examples" / "images"

BLOCK = 16
"""Side in pixels of each flat-colour block, so lossy codecs keep block centres close."""

WHITE = (255, 255, 255)
ORIENTATION = 0x0112
"""EXIF tag number of Orientation."""

# Each case: a Pillow mode, the pixel value of each block in that mode, and the
# RGB value each block must load as. Alpha is composited over white, so a fully
# transparent pixel is white whatever its colour, and black at alpha 128 is
# 255 * (1 - 128/255) = 127 (one step of rounding either way is accepted).
CONTENT = {
    "RGB": ([(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)],
            [(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)]),
    "L": ([0, 77, 200, 255],
          [(0, 0, 0), (77, 77, 77), (200, 200, 200), (255, 255, 255)]),
    "LA": ([(0, 255), (0, 128), (200, 0), (77, 255)],
           [(0, 0, 0), (127, 127, 127), WHITE, (77, 77, 77)]),
    "P": ([0, 1, 2, 3],
          [(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)]),
    "P-transparent": ([0, 1, 2, 3],
                      [WHITE, (0, 255, 0), (0, 0, 255), (12, 34, 56)]),
    "RGBA": ([(255, 0, 0, 0), (0, 0, 0, 128), (10, 20, 30, 255), (0, 255, 0, 255)],
             [WHITE, (127, 127, 127), (10, 20, 30), (0, 255, 0)]),
    "RGBA-binary": ([(255, 0, 0, 0), (10, 20, 30, 255), (0, 255, 0, 255), (0, 0, 255, 255)],
                    [WHITE, (10, 20, 30), (0, 255, 0), (0, 0, 255)]),
    "CMYK": ([(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 0, 255)],
             [WHITE, (0, 255, 255), (255, 0, 255), (0, 0, 0)]),
    "I;16": ([0, 65535, 32896, 25700],
             [(0, 0, 0), (255, 255, 255), (128, 128, 128), (100, 100, 100)]),
    "1": ([0, 255, 0, 255],
          [(0, 0, 0), WHITE, (0, 0, 0), WHITE]),
}

PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255, 12, 34, 56]


def make_image(case: str) -> Image.Image:
    """Build a 4-block-wide image of the given CONTENT case, each block one flat value."""
    values, _ = CONTENT[case]
    mode = {"P-transparent": "P", "RGBA-binary": "RGBA"}.get(case, case)
    if mode == "1":
        grey = make_grey_blocks(values)
        return grey.convert("1", dither=Image.Dither.NONE)
    image = Image.new(mode, (BLOCK * len(values), BLOCK))
    if mode == "P":
        image.putpalette(PALETTE)
    for index, value in enumerate(values):
        image.paste(value, (index * BLOCK, 0, (index + 1) * BLOCK, BLOCK))
    return image


def make_grey_blocks(values: list[int]) -> Image.Image:
    image = Image.new("L", (BLOCK * len(values), BLOCK))
    for index, value in enumerate(values):
        image.paste(value, (index * BLOCK, 0, (index + 1) * BLOCK, BLOCK))
    return image


def save_case(case: str, fmt: str, folder: Path, **options) -> Path:
    suffix = {"JPEG": "jpg", "WEBP": "webp", "TIFF": "tiff"}.get(fmt, fmt.lower())
    path = folder / f"{case.replace(';', '')}.{suffix}"
    image = make_image(case)
    if case == "P-transparent":
        options["transparency"] = 0
    image.save(path, fmt, **options)
    return path


def block_centres(image: Image.Image, count: int) -> list[tuple[int, ...]]:
    pixels = np.asarray(image)
    return [tuple(int(v) for v in pixels[BLOCK // 2, index * BLOCK + BLOCK // 2]) for index in range(count)]


def block_pixels(image: Image.Image, index: int) -> np.ndarray:
    pixels = np.asarray(image)
    return pixels[:, index * BLOCK:(index + 1) * BLOCK].reshape(-1, 3)


# ---------------------------------------------------------------------- lossless formats

LOSSLESS = [
    ("PNG", "RGB"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "P-transparent"),
    ("PNG", "RGBA"), ("PNG", "I;16"), ("PNG", "1"),
    ("WEBP", "RGB"), ("WEBP", "RGBA"), ("WEBP", "LA"),
    ("BMP", "RGB"), ("BMP", "L"), ("BMP", "P"), ("BMP", "1"),
    ("TIFF", "RGB"), ("TIFF", "L"), ("TIFF", "LA"), ("TIFF", "P"), ("TIFF", "RGBA"),
    ("TIFF", "CMYK"), ("TIFF", "I;16"), ("TIFF", "1"),
    ("GIF", "L"), ("GIF", "P"), ("GIF", "P-transparent"), ("GIF", "RGBA-binary"), ("GIF", "1"),
]


@pytest.mark.parametrize(("fmt", "case"), LOSSLESS, ids=[f"{f}-{c}" for f, c in LOSSLESS])
def test_load_rgb_lossless_pixels(tmp_path, fmt, case):
    options = {"lossless": True} if fmt == "WEBP" else {}
    path = save_case(case, fmt, tmp_path, **options)
    _, expected = CONTENT[case]
    # Half-transparent pixels may round either way, but every other value is exact.
    tolerance = 1 if case in ("LA", "RGBA") else 0

    image = load_rgb(path)

    assert image.mode == "RGB"
    assert image.size == (BLOCK * len(expected), BLOCK)
    for index, colour in enumerate(expected):
        block = block_pixels(image, index).astype(int)
        difference = np.abs(block - np.array(colour)).max()
        assert difference <= tolerance, f"block {index}: expected {colour}, got {tuple(block[0])}"


# ---------------------------------------------------------------------- lossy formats

LOSSY = [
    ("JPEG", "RGB", {"quality": 95, "subsampling": 0}),
    ("JPEG", "L", {"quality": 95}),
    ("JPEG", "CMYK", {"quality": 95}),
    ("JPEG", "1", {"quality": 95}),
    ("WEBP", "RGB", {"quality": 95}),
    ("WEBP", "RGBA", {"quality": 95}),
    ("WEBP", "L", {"quality": 95}),
]
LOSSY_TOLERANCE = 12


@pytest.mark.parametrize(("fmt", "case", "options"), LOSSY, ids=[f"{f}-{c}" for f, c, _ in LOSSY])
def test_load_rgb_lossy_pixels(tmp_path, fmt, case, options):
    path = save_case(case, fmt, tmp_path, **options)
    _, expected = CONTENT[case]

    image = load_rgb(path)

    assert image.mode == "RGB"
    assert image.size == (BLOCK * len(expected), BLOCK)
    for index, (got, colour) in enumerate(zip(block_centres(image, len(expected)), expected)):
        difference = max(abs(g - c) for g, c in zip(got, colour))
        assert difference <= LOSSY_TOLERANCE, f"block {index}: expected {colour}, got {got}"


# ---------------------------------------------------------------------- alpha and 16-bit


def test_alpha_transparent_red_is_white(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)

    assert load_rgb(path).getpixel((1, 1)) == WHITE


def test_alpha_half_black_is_grey(tmp_path):
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(path)

    red, green, blue = load_rgb(path).getpixel((1, 1))

    assert abs(red - 128) <= 1
    assert abs(green - 128) <= 1
    assert abs(blue - 128) <= 1


def test_alpha_opaque_keeps_colour(tmp_path):
    path = tmp_path / "opaque.png"
    Image.new("RGBA", (4, 4), (10, 200, 30, 255)).save(path)

    assert load_rgb(path).getpixel((1, 1)) == (10, 200, 30)


def test_alpha_pil_image_input(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))

    assert load_rgb(image).getpixel((0, 0)) == WHITE


def test_alpha_naive_convert_differs(tmp_path):
    # The expected values above would reject a loader that only calls
    # Image.open(path).convert("RGB"), because that drops alpha and keeps the red.
    path = tmp_path / "red.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)

    with Image.open(path) as opened:
        naive = opened.convert("RGB").getpixel((1, 1))

    assert naive != WHITE
    assert load_rgb(path).getpixel((1, 1)) == WHITE


def test_i16_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[65535, 32896, 0]], dtype=np.uint16)).save(path)

    image = load_rgb(path)

    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (128, 128, 128)
    assert image.getpixel((2, 0)) == (0, 0, 0)


def test_i16_naive_convert_clips(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[32896]], dtype=np.uint16)).save(path)

    with Image.open(path) as opened:
        naive = opened.convert("RGB").getpixel((0, 0))

    assert naive == (255, 255, 255)
    assert load_rgb(path).getpixel((0, 0)) == (128, 128, 128)


def test_mode_f_rejected(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(path)

    with pytest.raises(ImageLoadError, match=re.escape(str(path))) as raised:
        load_rgb(path)

    assert "mode F" in str(raised.value)


# ---------------------------------------------------------------------- EXIF orientation


def make_upright_marker() -> Image.Image:
    """A 48x32 grey image with a red block top-left and a blue block bottom-right."""
    upright = Image.new("RGB", (48, 32), (128, 128, 128))
    upright.paste((255, 0, 0), (0, 0, 16, 16))
    upright.paste((0, 0, 255), (32, 16, 48, 32))
    return upright


# Orientation value and the transpose that turns the upright image into the
# stored one, which is the inverse of the transpose a viewer applies.
STORED_TRANSPOSE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def assert_close(got, expected, tolerance=24):
    assert max(abs(g - e) for g, e in zip(got, expected)) <= tolerance, f"expected about {expected}, got {got}"


@pytest.mark.parametrize("orientation", sorted(STORED_TRANSPOSE))
def test_exif_orientation_file(tmp_path, orientation):
    stored = make_upright_marker().transpose(STORED_TRANSPOSE[orientation])
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / f"oriented-{orientation}.jpg"
    stored.save(path, "JPEG", quality=95, subsampling=0, exif=exif)

    image = load_rgb(path)

    assert image.size == (48, 32)
    assert_close(image.getpixel((8, 8)), (255, 0, 0))
    assert_close(image.getpixel((40, 24)), (0, 0, 255))
    assert_close(image.getpixel((40, 8)), (128, 128, 128))


def test_exif_orientation_pil_input(tmp_path):
    stored = make_upright_marker().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "oriented.jpg"
    stored.save(path, "JPEG", quality=95, subsampling=0, exif=exif)

    with Image.open(path) as opened:
        image = load_rgb(opened)

    assert image.size == (48, 32)
    assert_close(image.getpixel((8, 8)), (255, 0, 0))


def test_exif_rocket_upright():
    image = load_rgb(EXAMPLE_IMAGES / "rocket.jpeg")

    assert image.width == 384
    assert image.height == 256


def displayed_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(ORIENTATION, 1)
    # Orientations 5 to 8 turn the image by a quarter, swapping width and height.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@pytest.mark.parametrize("path", sorted(EXAMPLE_IMAGES.iterdir()), ids=lambda p: p.name)
def test_examples_load(path):
    image = load_rgb(path)

    assert image.mode == "RGB"
    assert image.size == displayed_size(path)


# ---------------------------------------------------------------------- arrays and tensors

HEIGHT, WIDTH = 3, 5


def random_uint8(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_array_grey_2d():
    array = random_uint8(HEIGHT, WIDTH)

    image = load_rgb(array)

    assert image.mode == "RGB"
    assert image.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(image), np.repeat(array[..., None], 3, axis=2))


def test_array_grey_one_channel():
    array = random_uint8(HEIGHT, WIDTH, 1)

    image = load_rgb(array)

    assert image.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(image), np.repeat(array, 3, axis=2))


def test_array_rgb():
    array = random_uint8(HEIGHT, WIDTH, 3)

    image = load_rgb(array)

    assert image.mode == "RGB"
    assert image.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(image), array)


def test_array_rgba_opaque_and_clear():
    array = random_uint8(HEIGHT, WIDTH, 4)
    array[..., 3] = 255
    array[0, 0] = (255, 0, 0, 0)

    pixels = np.asarray(load_rgb(array))

    assert tuple(pixels[0, 0]) == WHITE
    assert np.array_equal(pixels[1:], array[1:, :, :3])


def test_array_non_contiguous():
    array = random_uint8(HEIGHT, WIDTH * 2, 3)[:, ::2]

    assert np.array_equal(np.asarray(load_rgb(array)), array)


def test_tensor_grey_2d():
    array = random_uint8(HEIGHT, WIDTH)

    image = load_rgb(torch.from_numpy(array))

    assert image.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(image)[..., 0], array)


def test_tensor_one_channel():
    array = random_uint8(1, HEIGHT, WIDTH)

    image = load_rgb(torch.from_numpy(array))

    assert image.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.asarray(image)[..., 1], array[0])


def test_tensor_rgb_matches_array():
    chw = random_uint8(3, HEIGHT, WIDTH)

    from_tensor = np.asarray(load_rgb(torch.from_numpy(chw)))
    from_array = np.asarray(load_rgb(np.moveaxis(chw, 0, -1)))

    assert from_tensor.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(from_tensor, from_array)


def test_tensor_rgba_matches_array():
    chw = random_uint8(4, HEIGHT, WIDTH)
    chw[3] = 255
    chw[:, 0, 0] = (255, 0, 0, 0)

    from_tensor = np.asarray(load_rgb(torch.from_numpy(chw)))
    from_array = np.asarray(load_rgb(np.moveaxis(chw, 0, -1)))

    assert np.array_equal(from_tensor, from_array)
    assert tuple(from_tensor[0, 0]) == WHITE
    assert np.array_equal(from_tensor[1:], np.moveaxis(chw, 0, -1)[1:, :, :3])


def test_array_float_rejected():
    array = np.random.default_rng(0).random((HEIGHT, WIDTH, 3))

    with pytest.raises(ImageLoadError) as raised:
        load_rgb(array)

    message = str(raised.value)
    assert "float64" in message
    assert "uint8" in message
    assert "* 255" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_tensor_float_rejected(dtype):
    tensor = torch.rand(3, HEIGHT, WIDTH, dtype=dtype)

    with pytest.raises(ImageLoadError) as raised:
        load_rgb(tensor)

    message = str(raised.value)
    assert str(dtype).removeprefix("torch.") in message
    assert "uint8" in message


def test_tensor_bfloat16_rejected():
    # bfloat16 is a common model dtype with no numpy equivalent.
    tensor = torch.rand(3, HEIGHT, WIDTH, dtype=torch.bfloat16)

    with pytest.raises(ImageLoadError) as raised:
        load_rgb(tensor)

    assert "bfloat16" in str(raised.value)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int64, np.bool_])
def test_array_integer_dtype_rejected(dtype):
    array = np.zeros((HEIGHT, WIDTH, 3), dtype=dtype)

    with pytest.raises(ImageLoadError, match=np.dtype(dtype).name):
        load_rgb(array)


def test_array_two_channels_rejected():
    array = random_uint8(HEIGHT, WIDTH, 2)

    with pytest.raises(ImageLoadError, match=re.escape(str((HEIGHT, WIDTH, 2)))):
        load_rgb(array)


@pytest.mark.parametrize("shape", [(WIDTH,), (2, HEIGHT, WIDTH, 3)])
def test_array_bad_ndim_rejected(shape):
    with pytest.raises(ImageLoadError, match=re.escape(str(shape))):
        load_rgb(np.zeros(shape, dtype=np.uint8))


def test_tensor_two_channels_rejected():
    tensor = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.uint8)

    with pytest.raises(ImageLoadError, match="shape"):
        load_rgb(tensor)


@pytest.mark.parametrize("value", [[[0, 0], [0, 0]], {"image": "a.png"}, 42, None])
def test_unsupported_type_rejected(value):
    with pytest.raises(TypeError, match=type(value).__name__):
        load_rgb(value)


# ---------------------------------------------------------------------- errors name the file


def test_error_missing_file(tmp_path):
    path = tmp_path / "missing.jpg"

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_directory(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    random_image = Image.fromarray(random_uint8(64, 64, 3))
    random_image.save(path, "JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(random_uint8(64, 64, 3)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_text_as_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("This is not a picture.\n", encoding="utf-8")

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(path)


def test_error_str_path_named(tmp_path):
    path = tmp_path / "missing.png"

    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_rgb(str(path))


FUZZ_FORMATS = {
    "JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "GIF": "gif",
}


@pytest.fixture(scope="module")
def encoded_images() -> dict[str, bytes]:
    """Bytes of one small RGB image encoded in each format."""
    import io

    image = Image.fromarray(random_uint8(24, 32, 3, seed=1))
    encoded = {}
    for fmt in FUZZ_FORMATS:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    return encoded


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(sorted(FUZZ_FORMATS)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), max_size=4),
)
def test_corrupt_file_fuzz(tmp_path, encoded_images, fmt, cut, flips):
    # A cut or bit-flipped file must either decode or raise ImageLoadError
    # naming the file. No other exception type may escape.
    data = bytearray(encoded_images[fmt][: int(len(encoded_images[fmt]) * cut)])
    for position, mask in flips:
        if data:
            data[int(position * len(data))] ^= mask
    path = tmp_path / f"fuzz.{FUZZ_FORMATS[fmt]}"
    path.write_bytes(bytes(data))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = load_rgb(path)
        except ImageLoadError as err:
            assert str(path) in str(err)
        else:
            assert image.mode == "RGB"


# ---------------------------------------------------------------------- decompression bombs


def test_bomb_over_twice_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(ImageLoadError, match=re.escape(str(path))) as raised:
        load_rgb(path)

    assert "MAX_IMAGE_PIXELS" in str(raised.value)


def test_bomb_between_limits_warns(tmp_path, monkeypatch):
    # Pillow raises only above twice MAX_IMAGE_PIXELS. Between one and two
    # times the limit it warns with DecompressionBombWarning and loads the image.
    path = tmp_path / "large.png"
    Image.new("RGB", (50, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.warns(Image.DecompressionBombWarning):
        image = load_rgb(path)

    assert image.size == (50, 30)


# ---------------------------------------------------------------------- content keys


def test_key_path_spellings(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    Image.new("RGB", (2, 2)).save(path)
    monkeypatch.chdir(tmp_path)

    assert content_key(str(path)) == content_key(path)
    assert content_key("image.png") == content_key(path)
    assert content_key(Path("image.png")) == content_key(path)


def test_key_array_copies_equal():
    array = random_uint8(HEIGHT, WIDTH, 3)

    assert content_key(array) == content_key(array.copy())


def test_key_arrays_differ():
    array = random_uint8(HEIGHT, WIDTH, 3)
    other = array.copy()
    other[0, 0, 0] ^= 1

    assert content_key(array) != content_key(other)


def test_key_array_shapes_differ():
    array = random_uint8(HEIGHT, WIDTH, 3)

    assert content_key(array) != content_key(array.reshape(WIDTH, HEIGHT, 3))


def test_key_tensor_copies_equal():
    tensor = torch.from_numpy(random_uint8(3, HEIGHT, WIDTH))

    assert content_key(tensor) == content_key(tensor.clone())


def test_key_tensor_vs_array_layout():
    # A numpy array is read as (H, W, C) and a tensor as (C, H, W), so the same
    # bytes give different images and must not share a key.
    array = random_uint8(3, 3, 3)
    tensor = torch.from_numpy(array.copy())

    assert not np.array_equal(np.asarray(load_rgb(array)), np.asarray(load_rgb(tensor)))
    assert content_key(array) != content_key(tensor)


# ---------------------------------------------------------------------- extreme shapes


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 2000), (2000, 1)])
def test_extreme_shapes_load(tmp_path, width, height):
    path = tmp_path / f"{width}x{height}.png"
    Image.new("RGB", (width, height), (1, 2, 3)).save(path)

    image = load_rgb(path)

    assert image.size == (width, height)
    assert image.getpixel((width - 1, height - 1)) == (1, 2, 3)


def test_relative_path_loads(tmp_path, monkeypatch):
    Image.new("RGB", (3, 2), (9, 8, 7)).save(tmp_path / "small.bmp")
    monkeypatch.chdir(tmp_path)

    image = load_rgb(os.path.join(".", "small.bmp"))

    assert image.getpixel((0, 0)) == (9, 8, 7)
