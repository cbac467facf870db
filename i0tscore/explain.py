"""Explain one image–caption score: which dimensions made I0T-S, and what the modality means did to CLIP-S.

With x, y the L2-normalized image and caption embeddings, x̄, ȳ the modality
means of the statistics, and x', y' the standardized embeddings:

* I0T-S is built from x'·y' = Σ_d x'_d y'_d, so each dimension's contribution
  x'_d y'_d is exact (the ``top`` dimensions).
* The raw cosine splits as x·y = (x − x̄)·(y − ȳ) + (x̄·y + x·ȳ − x̄·ȳ): the part
  standardization keeps plus the part the means contribute.
* The "peak" dimensions are those where the modality means are largest, ranked
  by |x̄_d| + |ȳ_d|. For each, 2.5 · x_d y_d is that dimension's term of
  2.5 · x·y, which equals CLIP-S whenever x·y ≥ 0 (CLIP-S clips at 0).

This module also contains the ``i0tscore explain`` command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from i0tscore import functional as F
from i0tscore.result import Contribution

PEAK_RANKING = "|x̄_d| + |ȳ_d|"
"""Ranking key of peak dimensions: the sum of the absolute image and text means."""


@dataclass(frozen=True)
class PeakDimension:
    """A dimension where the modality means are large, and its effect on CLIP-S.

    Attributes:
        dim: index of the embedding dimension.
        image_mean: x̄_d, the image mean in this dimension.
        text_mean: ȳ_d, the text mean in this dimension.
        image_value: x_d, the L2-normalized image embedding.
        text_value: y_d, the L2-normalized caption embedding.
        clip_s_term: 2.5 · x_d · y_d, this dimension's term of 2.5 · x·y. The
            terms of all dimensions sum to CLIP-S when x·y ≥ 0.
        contribution: x'_d · y'_d, the same dimension's contribution after standardization.
    """

    dim: int
    image_mean: float
    text_mean: float
    image_value: float
    text_value: float
    clip_s_term: float
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """The scores of one image–caption pair and the dimensions behind them.

    Attributes:
        image: the image, as a path or a short description.
        caption: the caption, without the scorer's prefix.
        i0t_s: I0T-S as the scorer's preset reports it.
        clip_s: CLIP-S = 2.5 · max(x·y, 0).
        cosine: x'·y', the standardized cosine; the contributions of all dimensions sum to it.
        raw_cosine: x·y, the cosine of the L2-normalized embeddings.
        kept: (x − x̄)·(y − ȳ), the part of ``raw_cosine`` that standardization keeps.
        from_means: x̄·y + x·ȳ − x̄·ȳ, the part of ``raw_cosine`` the modality means contribute.
        top: the k dimensions with the largest |x'_d · y'_d|, largest first.
        peaks: the k dimensions with the largest |x̄_d| + |ȳ_d|, largest first.
        signature: what produced the scores (package, model, statistics, prefix, preset, dtype).
        truncated: whether the caption was cut to the model's maximum length.
        references: the reference captions, if any were given.
        ref_clip_s: RefCLIP-S, when references were given.
        ref_i0t_s: Ref-I0T-S, when references were given.
    """

    image: str
    caption: str
    i0t_s: float
    clip_s: float
    cosine: float
    raw_cosine: float
    kept: float
    from_means: float
    top: tuple[Contribution, ...]
    peaks: tuple[PeakDimension, ...]
    signature: str
    truncated: bool = False
    references: tuple[str, ...] = ()
    ref_clip_s: Optional[float] = None
    ref_i0t_s: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; NaN values (a share when x'·y' is 0) become None."""
        return {
            "image": self.image,
            "caption": self.caption,
            "references": list(self.references),
            "truncated": self.truncated,
            "signature": self.signature,
            "scores": {
                "i0t_s": _json_float(self.i0t_s),
                "clip_s": _json_float(self.clip_s),
                "ref_i0t_s": _json_float(self.ref_i0t_s),
                "ref_clip_s": _json_float(self.ref_clip_s),
            },
            "standardized_cosine": _json_float(self.cosine),
            "cosine_split": {
                "raw_cosine": _json_float(self.raw_cosine),
                "kept": _json_float(self.kept),
                "from_means": _json_float(self.from_means),
            },
            "top_contributions": [
                {
                    "dim": c.dim,
                    "image_value": _json_float(c.image_value),
                    "text_value": _json_float(c.text_value),
                    "contribution": _json_float(c.contribution),
                    "share": _json_float(c.share),
                }
                for c in self.top
            ],
            "peak_ranking": PEAK_RANKING,
            "peak_dimensions": [
                {
                    "dim": p.dim,
                    "image_mean": _json_float(p.image_mean),
                    "text_mean": _json_float(p.text_mean),
                    "image_value": _json_float(p.image_value),
                    "text_value": _json_float(p.text_value),
                    "clip_s_term": _json_float(p.clip_s_term),
                    "contribution": _json_float(p.contribution),
                }
                for p in self.peaks
            ],
        }

    def format_text(self) -> str:
        """Format the explanation as an aligned plain-text report."""
        lines = [f"{'image':<10}{self.image}", f"{'caption':<10}{self.caption}"]
        if self.truncated:
            lines.append(f"{'':<10}(truncated to the model's maximum length)")
        if self.references:
            lines.extend(f"{'reference':<10}{reference}" for reference in self.references)
        lines.append(f"{'signature':<10}{self.signature}")
        lines.append("")

        scores = [("I0T-S", self.i0t_s), ("CLIP-S", self.clip_s)]
        if self.ref_i0t_s is not None:
            scores.append(("Ref-I0T-S", self.ref_i0t_s))
        if self.ref_clip_s is not None:
            scores.append(("RefCLIP-S", self.ref_clip_s))
        scores.append(("x'·y'", self.cosine))
        lines.extend(f"{name:<10} {value:>9.4f}" for name, value in scores)
        lines.append("")

        lines.append("raw cosine x·y = kept by standardization + contributed by the means")
        lines.append(f"  {self.raw_cosine:9.4f} = {self.kept:9.4f} + {self.from_means:9.4f}")
        lines.append("")

        lines.append(f"top {len(self.top)} dimensions by |x'_d·y'_d| (they sum to x'·y' over all dimensions)")
        lines.append(_row(("dim", 5), ("x'_d", 9), ("y'_d", 9), ("x'_d·y'_d", 10), ("share", 8)))
        for c in self.top:
            lines.append(f"  {c.dim:>5} {c.image_value:9.4f} {c.text_value:9.4f} {c.contribution:10.5f} {_percent(c.share):>8}")
        lines.append("")

        lines.append(f"peak dimensions: the {len(self.peaks)} largest {PEAK_RANKING}; CLIP-S term = 2.5 · x_d·y_d")
        lines.append(_row(("dim", 5), ("x̄_d", 9), ("ȳ_d", 9), ("x_d", 9), ("y_d", 9), ("CLIP-S term", 12), ("x'_d·y'_d", 10)))
        for p in self.peaks:
            lines.append(
                f"  {p.dim:>5} {p.image_mean:9.4f} {p.text_mean:9.4f} {p.image_value:9.4f} {p.text_value:9.4f} "
                f"{p.clip_s_term:12.5f} {p.contribution:10.5f}"
            )
        return "\n".join(lines)


def _row(*cells: tuple[str, int]) -> str:
    """Right-align each header cell to its column width, as the value rows below it are."""
    return "  " + " ".join(text.rjust(width) for text, width in cells)


def _json_float(value: Optional[float]) -> Optional[float]:
    if value is None or math.isnan(value):
        return None
    return float(value)


def _percent(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.1f}%"


def explain(scorer: Any, image: Any, caption: str, references: Optional[Sequence[str]] = None, *, k: int = 10) -> Explanation:
    """Score one image–caption pair and explain the score.

    Args:
        scorer: an :class:`~i0tscore.scorer.I0TScore` with statistics (not ``"corpus"``).
        image: a path, PIL image, uint8 array or uint8 tensor.
        caption: the candidate caption.
        references: optional reference captions; add RefCLIP-S and Ref-I0T-S.
        k: number of top and peak dimensions to report (at most the embedding dimension).

    Raises:
        ValueError: ``k`` below 1, an empty reference list, or a scorer with
            ``stats="corpus"``. The means of a single pair are that pair itself,
            so x − x̄ would be 0 and the explanation meaningless.
        ImageLoadError: the image cannot be read.
    """
    from i0tscore.images import describe
    from i0tscore.statistics import Statistics

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if not isinstance(scorer.stats, Statistics):
        raise ValueError(
            "explain scores a single pair, so stats='corpus' would take the modality means from that pair "
            "alone and standardize both embeddings to zero. Pass a statistics file or a shipped name instead."
        )
    if references is not None and len(references) == 0:
        raise ValueError("references is empty; pass at least one reference caption, or None.")

    refs = [list(references)] if references is not None else None
    result = scorer.score([image], [caption], refs)

    split = result.cosine_split()
    x, y = result.image_embeds[0], result.text_embeds[0]
    return Explanation(
        image=describe(image),
        caption=caption,
        i0t_s=float(result.i0t_s[0]),
        clip_s=float(result.clip_s[0]),
        cosine=float(result.standardized_cosine()[0]),
        raw_cosine=float(F.cosine(x, y)),
        kept=float(split.kept[0]),
        from_means=float(split.from_means[0]),
        top=tuple(result.top_contributions(0, k)),
        peaks=_peak_dimensions(result, k),
        signature=result.signature,
        truncated=bool(result.truncated[0]),
        references=tuple(references or ()),
        ref_clip_s=float(result.ref_clip_s[0]) if result.ref_clip_s is not None else None,
        ref_i0t_s=float(result.ref_i0t_s[0]) if result.ref_i0t_s is not None else None,
    )


def _peak_dimensions(result: Any, k: int) -> tuple[PeakDimension, ...]:
    """Select the k dimensions with the largest |x̄_d| + |ȳ_d| for item 0 of ``result``, ties to the lower index."""
    image_mean = result.image_mean.numpy()
    text_mean = result.text_mean.numpy()
    x = result.image_embeds[0].numpy()
    y = result.text_embeds[0].numpy()
    contributions = result.contributions()[0]

    magnitude = np.abs(image_mean) + np.abs(text_mean)
    order = np.argsort(-magnitude, kind="stable")[:k]
    return tuple(
        PeakDimension(
            dim=int(d),
            image_mean=float(image_mean[d]),
            text_mean=float(text_mean[d]),
            image_value=float(x[d]),
            text_value=float(y[d]),
            clip_s_term=F.CLIP_S_WEIGHT * float(x[d] * y[d]),
            contribution=float(contributions[d]),
        )
        for d in order
    )


# ---------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    """Parse a command-line integer of at least 1, for argparse's ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that build an :class:`~i0tscore.scorer.I0TScore`, as ``i0tscore score`` has them."""
    # Imported here because cli.py imports this module at its top.
    from i0tscore.cli import _add_model_options

    parser.add_argument("--stats", default=None, help="statistics file or shipped name (default: the statistics shipped for the model)")
    parser.add_argument("--allow-model-mismatch", action="store_true", help="use statistics built for another model")
    parser.add_argument("--preset", default="default", choices=["default", "paper"], help="default: I0T-S = x'.y'; paper: 2 * max(x'.y', 0) (default: %(default)s)")
    parser.add_argument("--prefix", default=None, help="caption prefix (default: the statistics' prefix, 'A photo depicts ')")
    _add_model_options(parser)


def scorer_from_args(args: argparse.Namespace) -> Any:
    """Build the scorer that the options of :func:`add_scorer_options` describe."""
    from i0tscore.scorer import I0TScore

    return I0TScore(
        args.model,
        stats=args.stats,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        preset=args.preset,
        prefix=args.prefix,
        batch_size=args.batch_size,
        progress=False if args.no_progress else None,
        allow_model_mismatch=args.allow_model_mismatch,
    )


def add_explain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` command to an argparse subparsers object and return its parser."""
    parser = subparsers.add_parser("explain", help="explain one caption's score dimension by dimension")
    parser.add_argument("image", help="image file")
    parser.add_argument("caption", help="candidate caption")
    parser.add_argument("--references", nargs="+", default=None, metavar="R", help="reference captions; add RefCLIP-S and Ref-I0T-S")
    parser.add_argument("--k", type=positive_int, default=10, help="number of top and peak dimensions to list (default: %(default)s)")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="output format on stdout (default: %(default)s)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also write a bar chart of the top contributions to this PNG file")
    add_scorer_options(parser)
    return parser


def run_explain(args: argparse.Namespace) -> int:
    """Run ``i0tscore explain``: print the explanation and optionally plot it; return the exit code 0.

    Raises:
        MissingExtraError: ``--plot`` was given and matplotlib is not installed.
            This is checked before the model loads.
    """
    if args.plot:
        from i0tscore.plots import import_matplotlib

        import_matplotlib()

    scorer = scorer_from_args(args)
    explanation = explain(scorer, args.image, args.caption, args.references, k=args.k)
    if args.format == "json":
        text = json.dumps(explanation.to_dict(), indent=1, ensure_ascii=False)
    else:
        text = explanation.format_text()
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

    if args.plot:
        from i0tscore.plots import plot_contributions

        plot_contributions(explanation, args.plot)
        print(f"i0tscore: wrote {args.plot}", file=sys.stderr)
    return 0
