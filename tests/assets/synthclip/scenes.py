"""Seeded synthetic scenes with captions, for training and testing a small CLIP model.

A scene is a group of 1 to 3 identical shapes in one quadrant of a plain background.
Six attributes describe it: colour, shape, position, size, count and background.
Every caption mentions all six, so a caption built from a scene changed by
`corrupt(scene, k, rng)` has exactly `6 - k` correct attributes.

Only numpy and Pillow are imported, so tests can load this file through `importlib`
or a `sys.path` entry without installing anything.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
"""Width and height of a rendered scene, in pixels."""

SUPERSAMPLING = 4
"""Scenes are drawn at this multiple of IMAGE_SIZE and box-filtered down, for anti-aliased edges."""

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "position", "size", "count", "background")
"""Scene attributes in a fixed order. Every caption mentions each of them once."""

VALUES: dict[str, tuple] = {
    "colour": ("red", "green", "blue", "yellow", "purple", "orange"),
    "shape": ("circle", "square", "triangle", "cross"),
    "position": ("top left", "top right", "bottom left", "bottom right"),
    "size": ("small", "large"),
    "count": (1, 2, 3),
    "background": ("white", "black", "gray", "cyan"),
}
"""Possible values of each attribute. Shape colours and background colours do not overlap,
so every combination is drawable with visible contrast."""

SPLIT_CODES: dict[str, int] = {"train": 0, "heldout": 1}
"""First element of every per-example seed, so no train seed equals a heldout seed."""

_SHAPE_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 50),
    "blue": (35, 70, 215),
    "yellow": (240, 215, 35),
    "purple": (140, 45, 170),
    "orange": (245, 135, 25),
}
_BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (242, 242, 242),
    "black": (18, 18, 18),
    "gray": (125, 125, 125),
    "cyan": (125, 220, 230),
}
_BRIGHTNESS_JITTER = 8.0
"""Standard deviation of a scene colour's offset shared by R, G and B, in 0-255 units."""
_TINT_JITTER = 3.0
"""Standard deviation of a scene colour's independent per-channel offset, in 0-255 units.
Kept small so that gray and white stay neutral."""

# Object centres relative to the quadrant's top-left corner, in output pixels. A quadrant is
# 32 x 32 pixels. With jitter, a large shape is at most 12.6 pixels wide and centres stay at
# least 13 pixels apart and 7 pixels from the quadrant's edges, so shapes never overlap.
_LAYOUTS: dict[int, tuple[tuple[tuple[float, float], ...], ...]] = {
    1: (((16.0, 16.0),),),
    2: (
        ((8.5, 16.0), (23.5, 16.0)),
        ((16.0, 8.5), (16.0, 23.5)),
        ((9.0, 9.0), (23.0, 23.0)),
        ((23.0, 9.0), (9.0, 23.0)),
    ),
    3: (
        ((8.0, 8.5), (24.0, 8.5), (16.0, 23.5)),
        ((8.0, 23.5), (24.0, 23.5), (16.0, 8.5)),
    ),
}
_POSITION_ORIGIN: dict[str, tuple[float, float]] = {
    "top left": (0.0, 0.0),
    "top right": (32.0, 0.0),
    "bottom left": (0.0, 32.0),
    "bottom right": (32.0, 32.0),
}
_RADIUS = {"small": 4.0, "large": 6.0}
"""Nominal shape radius in output pixels: a circle's radius and half a cross's span.
See `_draw_shape` for squares and triangles."""
_CENTRE_JITTER = 1.0
_RADIUS_JITTER = 0.3


@dataclasses.dataclass(frozen=True)
class Scene:
    """Attributes of one synthetic scene.

    Attributes:
        colour: Fill colour of the shapes, one of `VALUES["colour"]`.
        shape: Shape name, one of `VALUES["shape"]`.
        position: Quadrant that contains the shapes, one of `VALUES["position"]`.
        size: "small" or "large".
        count: Number of shapes, 1 to 3.
        background: Background colour, one of `VALUES["background"]`.
        layout_seed: Seed of the pixel-level details (exact offsets, colour shades), which
            no caption mentions. `corrupt` keeps it, so a changed scene differs from the
            original only in the changed attributes.
    """

    colour: str
    shape: str
    position: str
    size: str
    count: int
    background: str
    layout_seed: int

    def attributes(self) -> dict[str, str | int]:
        """Return the six captioned attributes by name, without the layout seed."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


@dataclasses.dataclass(frozen=True)
class Split:
    """Scenes, renders and captions of one deterministic split.

    Attributes:
        name: "train" or "heldout".
        seed: Seed that the split was made with.
        scenes: One scene per example.
        images: `render(scene)` for each scene, 64 x 64 RGB.
        captions: One caption per example.
        caption_seeds: Seed of the generator that drew each caption. Calling
            `caption(other_scene, np.random.default_rng(caption_seeds[i]))` repeats
            example i's template and synonyms, so only the changed attributes differ.
    """

    name: str
    seed: int
    scenes: list[Scene]
    images: list[Image.Image]
    captions: list[str]
    caption_seeds: list[int]


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene with every attribute uniform and independent.

    Args:
        rng: Source of randomness. Exactly seven values are drawn from it.

    Returns:
        A new scene.
    """
    chosen = {name: VALUES[name][int(rng.integers(len(VALUES[name])))] for name in ATTRIBUTES}
    return Scene(**chosen, layout_seed=int(rng.integers(2**31)))


def render(scene: Scene) -> Image.Image:
    """Draw a scene as a 64 x 64 RGB image.

    The result depends only on `scene`, including `scene.layout_seed`, so equal scenes give
    equal images.

    Args:
        scene: Scene to draw.

    Returns:
        A new RGB image of IMAGE_SIZE x IMAGE_SIZE pixels.
    """
    layout_rng = np.random.default_rng(scene.layout_seed)
    background = _jitter_colour(_BACKGROUND_RGB[scene.background], layout_rng)
    fill = _jitter_colour(_SHAPE_RGB[scene.colour], layout_rng)
    layouts = _LAYOUTS[scene.count]
    centres = layouts[int(layout_rng.integers(len(layouts)))]
    origin_x, origin_y = _POSITION_ORIGIN[scene.position]

    canvas_size = IMAGE_SIZE * SUPERSAMPLING
    canvas = Image.new("RGB", (canvas_size, canvas_size), background)
    draw = ImageDraw.Draw(canvas)
    for centre_x, centre_y in centres:
        offset_x, offset_y = layout_rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER, size=2)
        radius = _RADIUS[scene.size] + layout_rng.uniform(-_RADIUS_JITTER, _RADIUS_JITTER)
        _draw_shape(
            draw,
            scene.shape,
            (origin_x + centre_x + offset_x) * SUPERSAMPLING,
            (origin_y + centre_y + offset_y) * SUPERSAMPLING,
            radius * SUPERSAMPLING,
            fill,
        )
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def _jitter_colour(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    offset = rng.normal(0.0, _BRIGHTNESS_JITTER) + rng.normal(0.0, _TINT_JITTER, size=3)
    shifted = np.clip(np.asarray(rgb) + offset, 0, 255)
    return tuple(int(round(channel)) for channel in shifted)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre_x: float,
    centre_y: float,
    radius: float,
    fill: tuple[int, int, int],
) -> None:
    """Draw one shape whose body fits in a circle of `radius` around the centre, in canvas pixels."""
    if shape == "circle":
        draw.ellipse((centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius), fill=fill)
    elif shape == "square":
        # 0.8 * radius half-side keeps the square's area close to the circle's.
        half = 0.8 * radius
        draw.rectangle((centre_x - half, centre_y - half, centre_x + half, centre_y + half), fill=fill)
    elif shape == "triangle":
        # Upward equilateral triangle with its centroid slightly below the centre, so it
        # looks centred. Its vertices lie on a circle of 1.1 * radius.
        outer = 1.1 * radius
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        shift = 0.15 * radius
        points = [(centre_x + outer * np.cos(a), centre_y + shift + outer * np.sin(a)) for a in angles]
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        # Plus sign whose bars are 0.7 * radius thick.
        half_bar = 0.35 * radius
        draw.rectangle((centre_x - radius, centre_y - half_bar, centre_x + radius, centre_y + half_bar), fill=fill)
        draw.rectangle((centre_x - half_bar, centre_y - radius, centre_x + half_bar, centre_y + radius), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {VALUES['shape']}")


# Synonym lists have the same length for every value of an attribute, so the number of draws
# from the caption generator never depends on the scene.
_COUNT_PHRASES: dict[int, tuple[str, str, str]] = {
    1: ("one", "a single", "a"),
    2: ("two", "a pair of", "two"),
    3: ("three", "a group of three", "three"),
}
_SIZE_PHRASES: dict[str, tuple[str, str, str]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
_POSITION_PHRASES: dict[str, tuple[str, str]] = {
    "top left": ("top left", "upper left"),
    "top right": ("top right", "upper right"),
    "bottom left": ("bottom left", "lower left"),
    "bottom right": ("bottom right", "lower right"),
}
_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

# Fields: {np} is count, size, colour and shape as one noun phrase. The others are {count},
# {size}, {colour}, {shape} (plural when count > 1), {be} ("is" or "are"), {position} and
# {background}.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{np} in the {position} corner on a {background} background",
    "a {background} background with {np} in the {position}",
    "in the {position} corner there {be} {np} on {background}",
    "{count} {colour} {shape}, {size}, {position}, {background} background",
    "a {background} picture showing {np} at the {position}",
    "{count} {shape} coloured {colour}, {size} in size, placed {position} over a {background} background",
    "{position}: {np} against {background}",
    "on a {background} backdrop, {count} {size} {shape} in {colour} at the {position}",
)
"""Caption templates. They vary the word order and phrasing, and each names every attribute once."""

_CAPTION_DRAWS = 4
"""Uniform numbers drawn per caption: template, count phrase, size phrase, position phrase."""


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """Write a caption that names all six attributes of a scene.

    The template and synonyms depend only on the draws from `rng`, and the number of
    draws is the same for every scene. So two scenes captioned with generators in the same
    state get the same template and synonyms, and their captions differ only in the words
    for attributes that differ.

    Args:
        scene: Scene to describe.
        rng: Source of randomness for the template and synonyms.

    Returns:
        A lower-case English caption without final punctuation.
    """
    template_u, count_u, size_u, position_u = rng.random(_CAPTION_DRAWS)
    count_phrase = _pick(_COUNT_PHRASES[scene.count], count_u)
    size_phrase = _pick(_SIZE_PHRASES[scene.size], size_u)
    position_phrase = _pick(_POSITION_PHRASES[scene.position], position_u)
    shape_word = scene.shape if scene.count == 1 else _PLURALS[scene.shape]
    noun_phrase = f"{count_phrase} {size_phrase} {scene.colour} {shape_word}"
    text = _pick(CAPTION_TEMPLATES, template_u).format(
        np=noun_phrase,
        count=count_phrase,
        size=size_phrase,
        colour=scene.colour,
        shape=shape_word,
        be="is" if scene.count == 1 else "are",
        position=position_phrase,
        background=scene.background,
    )
    # "a orange" -> "an orange". No other word that can follow "a" starts with a vowel.
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _pick(options: Sequence, u: float):
    return options[min(int(u * len(options)), len(options) - 1)]


def corrupt(
    scene: Scene,
    n_wrong: int,
    rng: np.random.Generator,
    attributes: Sequence[str] | None = None,
) -> Scene:
    """Return a copy of a scene with exactly `n_wrong` attributes changed to another value.

    The changed attributes are drawn without replacement, and each new value is drawn
    uniformly from the other values of that attribute. The layout seed is kept.

    Args:
        scene: Scene to change.
        n_wrong: Number of attributes to change, from 0 to the number of candidates.
        rng: Source of randomness for which attributes change and their new values.
        attributes: Candidate attributes to change. Defaults to all of `ATTRIBUTES`.

    Returns:
        A new scene with `count_correct(result, scene) == 6 - n_wrong`.

    Raises:
        ValueError: If an attribute name is unknown or `n_wrong` is out of range.
    """
    candidates = tuple(ATTRIBUTES if attributes is None else attributes)
    unknown = [name for name in candidates if name not in VALUES]
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; expected names from {ATTRIBUTES}")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"duplicate attributes in {candidates}")
    if not 0 <= n_wrong <= len(candidates):
        raise ValueError(f"n_wrong must be between 0 and {len(candidates)}, got {n_wrong}")

    changes = {}
    for index in rng.choice(len(candidates), size=n_wrong, replace=False):
        name = candidates[int(index)]
        others = [value for value in VALUES[name] if value != getattr(scene, name)]
        changes[name] = others[int(rng.integers(len(others)))]
    return dataclasses.replace(scene, **changes)


def count_correct(scene: Scene, reference: Scene) -> int:
    """Count the captioned attributes on which `scene` agrees with `reference` (0 to 6)."""
    return sum(getattr(scene, name) == getattr(reference, name) for name in ATTRIBUTES)


def make_split(name: str, n: int, seed: int = 0) -> Split:
    """Build `n` examples of the "train" or "heldout" split.

    Example i is drawn from `np.random.default_rng([SPLIT_CODES[name], seed, i])`, so a
    split is the same on every run, a longer split extends a shorter one, and no train
    example shares a seed with a heldout example. Heldout scenes can still repeat a
    train scene's attributes, because there are only 2304 combinations. Their layouts
    and captions are drawn from different seeds.

    Args:
        name: "train" or "heldout".
        n: Number of examples, at least 0.
        seed: Seed of the split.

    Returns:
        The split with scenes, renders, captions and caption seeds.

    Raises:
        ValueError: If `name` is not a known split or `n` is negative.
    """
    if name not in SPLIT_CODES:
        raise ValueError(f"unknown split {name!r}; expected one of {tuple(SPLIT_CODES)}")
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")

    scenes, images, captions, caption_seeds = [], [], [], []
    for index in range(n):
        example_rng = np.random.default_rng([SPLIT_CODES[name], seed, index])
        scene = sample_scene(example_rng)
        caption_seed = int(example_rng.integers(2**63))
        scenes.append(scene)
        images.append(render(scene))
        captions.append(caption(scene, np.random.default_rng(caption_seed)))
        caption_seeds.append(caption_seed)
    return Split(name=name, seed=seed, scenes=scenes, images=images, captions=captions, caption_seeds=caption_seeds)
