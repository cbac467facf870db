"""The ``i0tscore report`` command: one self-contained HTML page about a scored set.

The scores file that ``i0tscore score --out FILE.json`` writes contains neither
embeddings nor mismatched pairs, so the report re-scores its items with the model
options given. It scores the matched pairs and, from the same embeddings and
means, mismatched pairs that give each image another item's caption (a seeded
derangement). The page contains the summary and signature, histograms of both
metrics over matched and mismatched pairs, a CLIP-S against I0T-S scatter, the
lowest- and highest-scoring items with thumbnails, and each item's top
contributions.

The page is self-contained: images are base64 ``data:`` URIs, the CSS is inline,
and it contains no scripts, links, external fonts or other network requests.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from i0tscore import functional as F
from i0tscore.result import Contribution, ScoreResult

THUMBNAIL_PIXELS = 160
"""Maximum width and height of an item thumbnail, in pixels."""

THUMBNAIL_JPEG_QUALITY = 80

MAX_DERANGEMENT_TRIES = 1000
"""Random permutations tried before giving up on mismatched pairs.

A uniform permutation of n ≥ 2 distinct items is a derangement with probability
about 1/e, so with distinct images and captions 1000 tries fail with probability
below 1e-190. Only sets where most items share one image or caption exhaust them.
"""

SCORE_TOLERANCE = 1e-4
"""Largest difference between a re-scored I0T-S and the scores file's value that passes without a warning."""


@dataclasses.dataclass(frozen=True)
class ReportItem:
    """One re-scored item of the scores file.

    Attributes:
        id: the item id from the scores file.
        image: the image path as the scores file gives it.
        caption: the caption.
        i0t_s: I0T-S, re-scored.
        clip_s: CLIP-S, re-scored.
        top: the dimensions with the largest |x'_d · y'_d|, largest first.
        thumbnail: a ``data:image/jpeg`` URI, only for the lowest and highest items.
    """

    id: str
    image: str
    caption: str
    i0t_s: float
    clip_s: float
    top: tuple[Contribution, ...]
    thumbnail: Optional[str] = None


# ---------------------------------------------------------------------- reading


def read_scores_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read the summary and items of a JSON scores file written by ``i0tscore score``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not such a JSON file (a CSV scores file, for example).
    """
    hint = "expected the JSON file that `i0tscore score --out scores.json` writes"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error}); {hint}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not isinstance(data.get("summary"), dict):
        raise ValueError(f"{path}: no 'summary' object and 'items' list; {hint}.")
    for n, item in enumerate(data["items"]):
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("image", "caption")):
            raise ValueError(f"{path}: items[{n}] has no string 'image' and 'caption'; {hint}.")
    return data["summary"], data["items"]


def resolve_image(image: str, folders: Sequence[Path]) -> Path:
    """Find a relative image path in the first of ``folders`` that contains it.

    Raises:
        FileNotFoundError: no folder contains the image.
    """
    path = Path(image)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [folder / path for folder in folders]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"image {image!r} not found (tried {tried}); pass --image-root with the folder that `i0tscore score` ran in.")


# ---------------------------------------------------------------------- mismatched pairs


def derangement(images: Sequence[str], captions: Sequence[str], seed: int) -> Optional[np.ndarray]:
    """Draw a seeded permutation that moves every caption to another item.

    Row n of the result is the item whose caption goes with image n. The draw is
    rejected and repeated while any image would get its own caption, a caption
    identical to its own, or a caption of an item with the same image.

    Returns:
        The permutation, or None when there are fewer than 2 items or
        :data:`MAX_DERANGEMENT_TRIES` draws all fail.
    """
    count = len(images)
    if count < 2:
        return None
    image_keys = np.array(images, dtype=object)
    caption_keys = np.array(captions, dtype=object)
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DERANGEMENT_TRIES):
        order = rng.permutation(count)
        if (image_keys[order] != image_keys).all() and (caption_keys[order] != caption_keys).all():
            return order
    return None


def score_mismatched(scorer: Any, matched: ScoreResult, order: np.ndarray) -> ScoreResult:
    """Score image n against caption ``order[n]`` from the embeddings and means of ``matched``.

    Using the matched set's means keeps the two sets on one scale, also with
    ``stats="corpus"``, and nothing is encoded twice.
    """
    x = matched.image_embeds
    y = matched.text_embeds[torch.from_numpy(order)]
    cosine_std = F.i0t_score(x, y, matched.image_mean, matched.text_mean)
    # The scorer's preset turns x'·y' into the reported I0T-S: weight · (clip ? max(c, 0) : c).
    preset = scorer.preset
    i0t = preset.weight * (cosine_std.clamp_min(0.0) if preset.clip else cosine_std)
    return ScoreResult(
        i0t_s=i0t.numpy(),
        clip_s=F.clip_score(x, y).numpy(),
        truncated=matched.truncated[order],
        signature=matched.signature,
    )


# ---------------------------------------------------------------------- images


def thumbnail_data_uri(path: Path) -> str:
    """Return a JPEG thumbnail of the image at ``path`` as a ``data:`` URI.

    The image goes through the scorer's own loading rules (EXIF orientation,
    conversion to RGB, transparency over white), so the thumbnail shows what was scored.
    """
    from i0tscore.images import load_rgb

    image = load_rgb(path)
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(png: bytes) -> str:
    """Return PNG bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------------- HTML

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1150px; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
code { background: #f4f4f4; padding: 0.1em 0.3em; word-break: break-all; }
img.plot { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.card { display: flex; gap: 1em; border: 1px solid #ddd; padding: 0.6em; margin: 0.6em 0; }
.card img.thumbnail { width: 160px; height: auto; align-self: flex-start; }
.caption { font-style: italic; }
.note { color: #555; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if isinstance(value, int):
        return str(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _summary_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f'<tr><th class="text">{_e(name)}</th><td>{_number(value)}</td></tr>' for name, value in rows)
    return f'<table class="summary">{body}</table>'


def _contribution_table(item: ReportItem) -> str:
    header = "<tr><th>dim</th><th>x'<sub>d</sub></th><th>y'<sub>d</sub></th><th>x'<sub>d</sub>·y'<sub>d</sub></th><th>share</th></tr>"
    rows = "".join(
        f"<tr><td>{c.dim}</td><td>{c.image_value:.4f}</td><td>{c.text_value:.4f}</td>"
        f"<td>{c.contribution:.5f}</td><td>{_share(c.share)}</td></tr>"
        for c in item.top
    )
    return f'<table class="contributions">{header}{rows}</table>'


def _share(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.1f}%"


def _item_heading(item: ReportItem) -> str:
    return (
        f"<h3>{_e(item.id)}: I0T-S {item.i0t_s:.4f}, CLIP-S {item.clip_s:.4f}</h3>"
        f'<p class="caption">{_e(item.caption)}</p><p><code>{_e(item.image)}</code></p>'
    )


def _card(item: ReportItem, plot_uri: Optional[str]) -> str:
    thumbnail = f'<img class="thumbnail" alt="{_e(item.id)}" src="{item.thumbnail}">' if item.thumbnail else ""
    plot = f'<img class="plot" alt="top contributions of {_e(item.id)}" src="{plot_uri}">' if plot_uri else ""
    return f'<div class="card">{thumbnail}<div>{_item_heading(item)}{_contribution_table(item)}{plot}</div></div>'


def render_html(
    *,
    title: str,
    summary_rows: Sequence[tuple[str, Any]],
    signature: str,
    plots: Sequence[tuple[str, str]],
    lowest: Sequence[tuple[ReportItem, Optional[str]]],
    highest: Sequence[tuple[ReportItem, Optional[str]]],
    items: Sequence[ReportItem],
    skipped: Sequence[dict[str, Any]],
    notes: Sequence[str],
) -> str:
    """Assemble the report page; every caption, path, id and message is HTML-escaped here.

    Args:
        plots: (alt text, ``data:`` URI) of each distribution plot.
        lowest, highest: items with an optional ``data:`` URI of their contribution plot.
        skipped: items of the scores file that carry an ``error``.
        notes: plain-text remarks shown under the plots.
    """
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        "<h2>Summary</h2>",
        _summary_table(summary_rows),
        f'<p>Signature: <code class="signature">{_e(signature)}</code></p>',
        "<h2>Score distributions</h2>",
    ]
    parts.extend(f'<img class="plot" alt="{_e(alt)}" src="{uri}">' for alt, uri in plots)
    parts.extend(f'<p class="note">{_e(note)}</p>' for note in notes)

    parts.append(f"<h2>Lowest I0T-S ({len(lowest)})</h2>")
    parts.extend(_card(item, plot) for item, plot in lowest)
    parts.append(f"<h2>Highest I0T-S ({len(highest)})</h2>")
    parts.extend(_card(item, plot) for item, plot in highest)

    parts.append(f"<h2>All items ({len(items)}): top contributions to x'·y'</h2>")
    for item in items:
        parts.append(f'<div class="item">{_item_heading(item)}{_contribution_table(item)}</div>')

    if skipped:
        parts.append(f"<h2>Skipped items ({len(skipped)})</h2>")
        rows = "".join(
            f'<tr><td class="text">{_e(s.get("id"))}</td><td class="text">{_e(s.get("image"))}</td><td class="text">{_e(s.get("error"))}</td></tr>'
            for s in skipped
        )
        parts.append(f'<table class="skipped"><tr><th class="text">id</th><th class="text">image</th><th class="text">error</th></tr>{rows}</table>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------- command line


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` command to an argparse subparsers object and return its parser."""
    from i0tscore.explain import add_scorer_options, positive_int

    parser = subparsers.add_parser("report", help="write a self-contained HTML report about a scores file")
    parser.add_argument("scored", help="JSON scores file written by `i0tscore score --out FILE.json`")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths in SCORED are resolved against (default: the current folder, then SCORED's folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the caption shuffle that builds the mismatched pairs (default: %(default)s)")
    parser.add_argument("--k", type=positive_int, default=5, help="top contributions listed per item (default: %(default)s)")
    parser.add_argument("--extremes", type=positive_int, default=5, help="lowest- and highest-scoring items shown with thumbnails, each (default: %(default)s)")
    # Unlike explain, a report scores a whole set, so --stats corpus is meaningful here.
    add_scorer_options(parser)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Run ``i0tscore report``: re-score the scores file's items and write the HTML page; return 0.

    Raises:
        MissingExtraError: matplotlib is not installed (checked before the model loads).
        FileNotFoundError: the scores file or an image is missing.
        ValueError: an invalid scores file, no scored items, or model options
            whose signature differs from the one in the scores file.
    """
    from i0tscore.explain import scorer_from_args
    from i0tscore.fileio import atomic_write
    from i0tscore.plots import import_matplotlib

    import_matplotlib()
    scored_path = Path(args.scored)
    summary, records = read_scores_file(scored_path)
    scored_records = [record for record in records if "error" not in record]
    skipped = [record for record in records if "error" in record]
    if not scored_records:
        raise ValueError(f"{scored_path}: every item was skipped on error, so there is nothing to report.")

    folders = [Path(args.image_root)] if args.image_root else [Path.cwd(), scored_path.parent]
    paths = [resolve_image(record["image"], folders) for record in scored_records]
    captions = [record["caption"] for record in scored_records]

    scorer = scorer_from_args(args)
    matched = scorer.score(paths, captions)
    _check_against_file(summary, scored_records, matched, scored_path)

    order = derangement([str(p.resolve()) for p in paths], captions, args.seed)
    mismatched = score_mismatched(scorer, matched, order) if order is not None else None
    page = _build_page(args, scored_path, summary, scored_records, skipped, paths, matched, mismatched)
    atomic_write(args.out, page)
    print(f"i0tscore: wrote {args.out}: {len(scored_records)} items, {len(skipped)} skipped", file=sys.stderr)
    return 0


def _check_against_file(summary: dict[str, Any], records: list[dict[str, Any]], matched: ScoreResult, path: Path) -> None:
    """Raise unless the model options reproduce the scores file's signature; warn on differing scores."""
    expected = summary.get("signature")
    if expected is not None and expected != matched.signature:
        raise ValueError(
            f"{path} was scored with signature {expected} but the model options give {matched.signature}; "
            f"pass the --model, --stats, --prefix, --preset and --dtype of the `i0tscore score` run."
        )
    differing = [
        record.get("id")
        for record, value in zip(records, matched.i0t_s)
        if isinstance(record.get("i0t_s"), (int, float)) and abs(record["i0t_s"] - value) > SCORE_TOLERANCE
    ]
    if differing:
        warnings.warn(
            f"{len(differing)} item(s) re-scored more than {SCORE_TOLERANCE} away from {path} "
            f"(first: {differing[0]!r}); the report shows the re-scored values.",
            stacklevel=2,
        )


def _build_page(
    args: argparse.Namespace,
    scored_path: Path,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    paths: list[Path],
    matched: ScoreResult,
    mismatched: Optional[ScoreResult],
) -> str:
    from i0tscore.plots import contributions_figure, render_png, score_histograms_figure, score_scatter_figure

    items = [
        ReportItem(
            id=str(record.get("id", n)),
            image=record["image"],
            caption=record["caption"],
            i0t_s=float(matched.i0t_s[n]),
            clip_s=float(matched.clip_s[n]),
            top=tuple(matched.top_contributions(n, args.k)),
        )
        for n, record in enumerate(records)
    ]
    # With fewer than 2 × extremes items the two lists would overlap, so each takes half.
    count = min(args.extremes, max(1, len(items) // 2))
    ranking = np.argsort(matched.i0t_s, kind="stable")
    lowest = [_with_thumbnail(items[n], paths[n]) for n in ranking[:count]]
    highest = [_with_thumbnail(items[n], paths[n]) for n in ranking[::-1][:count]]

    ids = [item.id for item in items]
    plots = [
        ("histograms of CLIP-S and I0T-S, matched and mismatched pairs", png_data_uri(render_png(score_histograms_figure(matched, mismatched)))),
        ("CLIP-S against I0T-S per item", png_data_uri(render_png(score_scatter_figure(matched.clip_s, matched.i0t_s, ids)))),
    ]
    # One contribution chart each for the lowest and the highest item keeps the page small.
    lowest_cards = [(item, png_data_uri(render_png(contributions_figure(item))) if n == 0 else None) for n, item in enumerate(lowest)]
    highest_cards = [(item, png_data_uri(render_png(contributions_figure(item))) if n == 0 else None) for n, item in enumerate(highest)]

    notes = []
    if mismatched is None:
        notes.append("No mismatched pairs: they need at least 2 items with distinct images and captions.")
    else:
        notes.append(
            f"Mismatched pairs give each image the caption of another item, drawn with seed {args.seed}; "
            f"they use the same embeddings and modality means as the matched pairs."
        )
    rows = _summary_rows(scored_path, summary, matched, mismatched, args.seed)
    return render_html(
        title=f"i0tscore report: {scored_path.name}",
        summary_rows=rows,
        signature=matched.signature,
        plots=plots,
        lowest=lowest_cards,
        highest=highest_cards,
        items=items,
        skipped=skipped,
        notes=notes,
    )


def _with_thumbnail(item: ReportItem, path: Path) -> ReportItem:
    return dataclasses.replace(item, thumbnail=thumbnail_data_uri(path))


def _summary_rows(
    scored_path: Path, summary: dict[str, Any], matched: ScoreResult, mismatched: Optional[ScoreResult], seed: int
) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("scores file", str(scored_path))]
    rows.extend((key, value) for key, value in summary.items() if key != "signature")
    rows.append(("matched pairs re-scored", len(matched)))
    rows.append(("mean I0T-S, matched (re-scored)", matched.mean_i0t_s))
    rows.append(("mean CLIP-S, matched (re-scored)", matched.mean_clip_s))
    if mismatched is not None:
        rows.append(("mismatched pairs (seed)", f"{len(mismatched)} ({seed})"))
        rows.append(("mean I0T-S, mismatched", mismatched.mean_i0t_s))
        rows.append(("mean CLIP-S, mismatched", mismatched.mean_clip_s))
    return rows
