"""Turn the image inputs users have into RGB PIL images.

Accepted inputs:

* a file path (``str`` or ``os.PathLike``): opened with Pillow, EXIF orientation applied;
* a ``PIL.Image.Image``: EXIF orientation applied when the image carries it;
* a ``numpy.ndarray`` of dtype uint8, laid out as Pillow does: (H, W), (H, W, 1),
  (H, W, 3) or (H, W, 4);
* a ``torch.Tensor`` of dtype uint8, laid out channels-first as torchvision does:
  (H, W), (1, H, W), (3, H, W) or (4, H, W).

Float arrays and tensors are rejected: a float image may hold values in [0, 1]
or in [0, 255], and guessing wrong gives a plausible but wrong score.

Alpha policy: an image with transparency (RGBA, LA, PA, or a palette image with
a transparent colour) is composited over a white background, as a viewer shows it
on a white page. Pixels under full transparency therefore do not affect the score.

16-bit greyscale (I;16 and friends) is scaled from 0–65535 to 0–255; Pillow's
own conversion would clip it instead. 32-bit integer images (mode I) are scaled
the same way when their values fit in 16 bits. Float images (mode F) are rejected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, Any]

BACKGROUND = (255, 255, 255)
"""Colour that transparent pixels are composited over."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageLoadError(ValueError):
    """An image could not be read or converted; the message names the image."""


def describe(image: ImageInput) -> str:
    """A short name for an image input, for messages."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"PIL image {image.mode} {image.width}x{image.height}"
    shape = tuple(getattr(image, "shape", ()))
    return f"{type(image).__name__} of shape {shape} and dtype {getattr(image, 'dtype', '?')}"


def load_rgb(image: ImageInput) -> Image.Image:
    """Return ``image`` as an RGB PIL image, following the module's conversion rules.

    Raises:
        ImageLoadError: the file is missing, unreadable, corrupt or too large,
            or the array has an unsupported dtype or shape.
        TypeError: the input is none of the accepted types.
    """
    if isinstance(image, (str, os.PathLike)):
        return _open_file(Path(image))
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image) or image)
    if isinstance(image, np.ndarray):
        return to_rgb(_from_array(image, channels_first=False))
    if type(image).__module__.startswith("torch"):
        return to_rgb(_from_tensor(image))
    raise TypeError(
        f"Unsupported image input of type {type(image).__name__}: expected a file path, a PIL image, "
        f"a uint8 numpy array (H, W[, C]) or a uint8 torch tensor (C, H, W)."
    )


def _open_file(path: Path) -> Image.Image:
    if path.is_dir():
        raise ImageLoadError(f"Image path {path} is a directory, not an image file.")
    if not path.exists():
        raise ImageLoadError(f"Image file not found: {path}.")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            return to_rgb(image)
    except Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"Image {path} is too large to decode safely ({err}). Downscale it, or raise "
            f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # Pillow reports truncated and corrupt files as OSError or SyntaxError.
        raise ImageLoadError(f"Cannot read image {path}: {err}. Check that the file is a valid image.") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1") and "transparency" in image.info:
        return to_rgb(image.convert("LA"))
    if mode.startswith("I;16") or mode == "I":
        return _wide_grey_to_rgb(image)
    if mode == "F":
        raise ImageLoadError(
            "Float images (Pillow mode F) are ambiguous: their values may be in [0, 1] or [0, 255]. "
            "Convert to 8-bit first, e.g. Image.fromarray((array * 255).round().astype('uint8'))."
        )
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageLoadError(
            f"Integer image (mode {image.mode}) has values from {values.min()} to {values.max()}; "
            f"expected 0–65535. Rescale it to 8-bit before scoring."
        )
    scaled = np.rint(values / 257.0).astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def _from_tensor(tensor: Any) -> Image.Image:
    # Check the dtype before .numpy(), which fails outright on bfloat16.
    import torch

    if tensor.dtype != torch.uint8:
        hint = ""
        if tensor.is_floating_point():
            hint = (
                " Float images are ambiguous because their values may be in [0, 1] or [0, 255]. "
                "If yours are in [0, 1], convert with (image * 255).round().to(torch.uint8)."
            )
        raise ImageLoadError(f"Image (C, H, W) tensor has dtype {tensor.dtype}; expected torch.uint8 values 0–255.{hint}")
    return _from_array(tensor.detach().cpu().numpy(), channels_first=True)


def _from_array(array: np.ndarray, *, channels_first: bool) -> Image.Image:
    layout = "(C, H, W) tensor" if channels_first else "(H, W, C) array"
    if array.dtype != np.uint8:
        hint = ""
        if np.issubdtype(array.dtype, np.floating):
            hint = (
                " Float images are ambiguous because their values may be in [0, 1] or [0, 255]. "
                "If yours are in [0, 1], convert with (image * 255).round().astype(numpy.uint8)."
            )
        raise ImageLoadError(f"Image {layout} has dtype {array.dtype}; expected uint8 values 0–255.{hint}")
    if array.ndim == 3 and channels_first:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array), mode="RGB" if array.shape[-1] == 3 else "RGBA")
    raise ImageLoadError(
        f"Image {layout} has shape {array.shape}; expected 1, 3 or 4 channels "
        f"({'C, H, W' if channels_first else 'H, W, C'}) or a 2-D greyscale array."
    )


def content_key(image: ImageInput) -> tuple:
    """A key under which identical image inputs collide, to encode each image once per call.

    Paths compare by resolved path, PIL images by object identity, and arrays
    and tensors by their bytes. Arrays and tensors never share a key, because
    the same bytes mean (H, W, C) in one and (C, H, W) in the other.
    """
    if isinstance(image, (str, os.PathLike)):
        return ("path", os.path.realpath(image))
    if isinstance(image, Image.Image):
        return ("pil", id(image))
    if isinstance(image, np.ndarray):
        return ("array", image.shape, str(image.dtype), _array_digest(image))
    if type(image).__module__.startswith("torch"):
        import torch

        if image.dtype != torch.uint8:
            return ("object", id(image))  # load_rgb rejects it anyway.
        array = image.detach().cpu().numpy()
        return ("tensor", array.shape, str(array.dtype), _array_digest(array))
    return ("object", id(image))


def _array_digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
