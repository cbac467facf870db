"""Build the example image set and caption files from scikit-image's bundled data.

Run from any directory with ``python examples/make_examples.py``. The script
reads only the sample images that ship inside the installed scikit-image
package (it never calls ``skimage.data`` functions, which may download files)
and overwrites ``examples/images/`` and the JSON files next to this script.
Pillow's encoders produce the same bytes on every run with the same Pillow
version. A different Pillow or codec library version may change the bytes of
the lossy files (JPEG, WebP) and of the palette PNG.

Requirements: Pillow with WebP support and scikit-image (0.26.0 was used).
"""

from __future__ import annotations

import json
from pathlib import Path

import skimage
from PIL import Image, ImageOps

EXAMPLES_DIR = Path(__file__).resolve().parent
IMAGES_DIR = EXAMPLES_DIR / "images"
SKIMAGE_DATA_DIR = Path(skimage.__file__).resolve().parent / "data"

# Every output file must stay below this size in bytes.
MAX_FILE_BYTES = 150_000

# EXIF tag 0x0112 (Orientation). Value 6 means that the stored pixels must be
# rotated 90 degrees clockwise to show the picture upright.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ROTATE_CLOCKWISE = 6

# Width in pixels of the fully transparent margin added around the RGBA image.
TRANSPARENT_BORDER = 16

# One entry per example image. "source" is the file name inside scikit-image's
# data folder, "max_side" the maximum long side in pixels after resizing and
# "save" the encoding applied by save_image(). The captions are original text
# written for this project after looking at each picture. "wrong" describes
# something that is not in the picture, so a metric should score it low.
EXAMPLES = [
    {
        "id": "astronaut",
        "coco_id": 1,
        "source": "astronaut.png",
        "file": "astronaut.jpg",
        "max_side": 384,
        "save": "jpeg",
        "caption": "A smiling astronaut in an orange flight suit poses beside an "
        "American flag and a model of the space shuttle.",
        "references": [
            "Portrait of a woman astronaut in an orange spacesuit with a black "
            "helmet in front of her.",
            "A female astronaut with short brown hair smiles in front of a US "
            "flag and a space shuttle model.",
            "A studio portrait of an astronaut wearing an orange pressure suit "
            "with mission patches.",
        ],
        "wrong": "Two children building a sandcastle on a sunny beach.",
    },
    {
        "id": "coffee",
        "coco_id": 2,
        "source": "coffee.png",
        "file": "coffee.JPG",
        "max_side": 384,
        "save": "jpeg",
        "caption": "A cup of espresso on a red saucer with a metal spoon, "
        "sitting on a wooden table.",
        "references": [
            "A small red and white espresso cup with crema, resting on a "
            "matching saucer.",
            "Seen from above, a coffee cup and a teaspoon on a red saucer on a worn "
            "wooden table.",
            "An espresso in a porcelain cup on a brown wooden surface, with a "
            "silver spoon on the saucer.",
        ],
        "wrong": "A red double-decker bus driving down a busy city street.",
    },
    {
        "id": "rocket",
        "coco_id": 3,
        "source": "rocket.jpg",
        "file": "rocket.jpeg",
        "max_side": 384,
        "save": "jpeg_exif_rotated",
        "caption": "A white rocket stands on its launch pad at dusk between "
        "tall lattice towers, lit by bright floodlights.",
        "references": [
            "A Falcon 9 rocket on the launch pad at twilight.",
            "A tall rocket ready for launch under a dark blue evening sky, "
            "surrounded by steel towers.",
            "Floodlights glow around a rocket standing upright on a launch pad "
            "at night.",
        ],
        "wrong": "A cat sleeping on a sofa next to a pile of cushions.",
    },
    {
        "id": "cat",
        "coco_id": 4,
        "source": "chelsea.png",
        "file": "cat.png",
        "max_side": 256,
        "save": "png_rgba",
        "caption": "A close-up of a tabby cat with green eyes and a pink nose.",
        "references": [
            "The face of a brown striped cat looking to the side with large "
            "green eyes.",
            "A tabby cat's head in close-up, with long white whiskers and a "
            "pink nose.",
            "Close-up portrait of a short-haired tabby cat against a blurred "
            "indoor background.",
        ],
        "wrong": "A snowy mountain peak under a clear blue sky.",
    },
    {
        "id": "camera",
        "coco_id": 5,
        "source": "camera.png",
        "file": "camera.png",
        "max_side": 384,
        "save": "png_gray",
        "caption": "A black and white photo of a man in a dark coat looking "
        "through a camera on a tripod in a grassy field.",
        "references": [
            "A man in a black coat and gloves operates a camera mounted on a "
            "tripod outdoors.",
            "A cameraman films on an open lawn with buildings and a tall tower "
            "in the distance.",
            "Black and white photograph of a man bending over a tripod-mounted "
            "camera on a field.",
        ],
        "wrong": "A bowl of fresh fruit on a kitchen counter.",
    },
    {
        "id": "hubble",
        "coco_id": 6,
        "source": "hubble_deep_field.jpg",
        "file": "hubble.png",
        "max_side": 384,
        "save": "png_palette",
        "caption": "A deep space image showing thousands of distant galaxies "
        "scattered across a black sky.",
        "references": [
            "Many small colorful galaxies and a few stars against the darkness "
            "of space.",
            "A telescope view of the deep universe filled with spiral and "
            "elliptical galaxies.",
            "Countless tiny points of red, white and blue light on a black "
            "background, mostly distant galaxies.",
        ],
        "wrong": "A crowded beach with colorful umbrellas on a summer day.",
    },
    {
        "id": "retina",
        "coco_id": 7,
        "source": "retina.jpg",
        "file": "retina.webp",
        "max_side": 384,
        "save": "webp",
        "caption": "A fundus photograph of a human retina, with red blood "
        "vessels branching out from the bright optic disc.",
        "references": [
            "A circular image of the back of an eye, orange-red with dark red "
            "blood vessels.",
            "A medical photo of a healthy retina with the optic nerve head on "
            "the left and the macula in the center.",
            "An eye fundus image on a black background, with veins and "
            "arteries spreading across the retina.",
        ],
        "wrong": "A group of cyclists racing along a mountain road.",
    },
    {
        "id": "brick",
        "coco_id": 8,
        "source": "brick.png",
        "file": "brick.bmp",
        "max_side": 320,
        "save": "bmp_gray",
        "caption": "A black and white close-up of a brick wall seen at an "
        "angle, with long narrow bricks and light mortar joints.",
        "references": [
            "Rows of rectangular bricks separated by pale mortar lines, "
            "photographed in shades of gray.",
            "A textured brick surface viewed in perspective, the bricks "
            "running from top to bottom.",
            "Black and white image of a brick wall with a regular staggered "
            "pattern.",
        ],
        "wrong": "A yellow taxi parked in front of a red fire hydrant.",
    },
]


def load_resized(source: str, max_side: int) -> Image.Image:
    """Load a scikit-image sample file, shrunk so its long side is at most max_side."""
    path = SKIMAGE_DATA_DIR / source
    if not path.is_file():
        raise FileNotFoundError(
            f"scikit-image sample file not found: {path}. "
            "Install scikit-image 0.26 or later, which ships this file."
        )
    with Image.open(path) as opened:
        image = opened.convert("L") if opened.mode == "L" else opened.convert("RGB")
    # Drop metadata carried over from the source file (hubble_deep_field.jpg
    # has an sRGB ICC profile), so each output contains only what save_image adds.
    image.info = {}

    scale = max_side / max(image.size)
    if scale < 1:
        new_size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(new_size, Image.Resampling.LANCZOS)
    return image


def add_transparent_border(image: Image.Image, border: int) -> Image.Image:
    """Return an RGBA copy of image framed by a fully transparent margin."""
    framed = Image.new(
        "RGBA", (image.width + 2 * border, image.height + 2 * border), (0, 0, 0, 0)
    )
    framed.paste(image.convert("RGBA"), (border, border))
    return framed


def save_image(image: Image.Image, encoding: str, path: Path) -> None:
    """Encode image in one of the formats and modes that the example set covers."""
    if encoding == "jpeg":
        image.convert("RGB").save(path, "JPEG", quality=90)
    elif encoding == "jpeg_exif_rotated":
        # Store the pixels turned 90 degrees counter-clockwise and tag them
        # with Orientation 6, so only a viewer that applies EXIF shows the
        # picture upright.
        stored = image.convert("RGB").transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = EXIF_ROTATE_CLOCKWISE
        stored.save(path, "JPEG", quality=90, exif=exif.tobytes())
    elif encoding == "png_rgba":
        add_transparent_border(image, TRANSPARENT_BORDER).save(path, "PNG", optimize=True)
    elif encoding == "png_gray":
        image.convert("L").save(path, "PNG", optimize=True)
    elif encoding == "png_palette":
        palette_image = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT
        )
        palette_image.save(path, "PNG", optimize=True)
    elif encoding == "webp":
        image.convert("RGB").save(path, "WEBP", quality=85, method=6)
    elif encoding == "bmp_gray":
        image.convert("L").save(path, "BMP")
    else:
        raise ValueError(
            f"invalid encoding {encoding!r} for {path.name}. Use one of: jpeg, "
            "jpeg_exif_rotated, png_rgba, png_gray, png_palette, webp, bmp_gray."
        )


def check_saved_image(example: dict, expected: Image.Image) -> str:
    """Reopen a written file, check its size and orientation, and describe it."""
    path = IMAGES_DIR / example["file"]
    size_bytes = path.stat().st_size
    if size_bytes >= MAX_FILE_BYTES:
        raise RuntimeError(
            f"{path.name} is {size_bytes} bytes, over the {MAX_FILE_BYTES} byte "
            "limit. Lower its max_side in EXAMPLES."
        )

    with Image.open(path) as saved:
        saved.load()
        upright = ImageOps.exif_transpose(saved)
        expected_size = expected.size
        if example["save"] == "png_rgba":
            expected_size = (
                expected.width + 2 * TRANSPARENT_BORDER,
                expected.height + 2 * TRANSPARENT_BORDER,
            )
        if upright.size != expected_size:
            raise RuntimeError(
                f"{path.name} shows as {upright.size} after applying EXIF, "
                f"expected {expected_size}"
            )
        width, height = saved.size
        return f"{path.name}: {saved.format} {saved.mode} {width}x{height}, {size_bytes} bytes"


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_caption_files() -> None:
    """Write the caption files in the CLIPScore, JSON Lines and COCO layouts."""
    write_json(
        EXAMPLES_DIR / "captions.json",
        {example["id"]: example["caption"] for example in EXAMPLES},
    )
    write_json(
        EXAMPLES_DIR / "references.json",
        {example["id"]: example["references"] for example in EXAMPLES},
    )

    # Two lines per image: the accurate caption, then the wrong one.
    lines = []
    for example in EXAMPLES:
        for caption in (example["caption"], example["wrong"]):
            record = {
                "image": f"images/{example['file']}",
                "caption": caption,
                "references": example["references"],
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    (EXAMPLES_DIR / "candidates.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    write_json(
        EXAMPLES_DIR / "coco_results.json",
        [{"image_id": example["coco_id"], "caption": example["caption"]} for example in EXAMPLES],
    )

    # COCO stores file_name relative to the image folder, here examples/images/.
    annotations = []
    for example in EXAMPLES:
        for reference in example["references"]:
            annotations.append(
                {
                    "image_id": example["coco_id"],
                    "id": len(annotations) + 1,
                    "caption": reference,
                }
            )
    write_json(
        EXAMPLES_DIR / "coco_annotations.json",
        {
            "info": {"description": "i0tscore example captions, references only"},
            "images": [
                {"id": example["coco_id"], "file_name": example["file"]} for example in EXAMPLES
            ],
            "annotations": annotations,
        },
    )


def main() -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    for example in EXAMPLES:
        image = load_resized(example["source"], example["max_side"])
        save_image(image, example["save"], IMAGES_DIR / example["file"])
        print(check_saved_image(example, image))
    write_caption_files()


if __name__ == "__main__":
    main()
