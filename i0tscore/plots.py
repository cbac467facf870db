"""Plots of explanations and score distributions, drawn with matplotlib's Agg backend.

matplotlib is an optional extra (``pip install 'i0tscore[plot]'``), so it is
imported only when a plot is drawn. Figures are built on
``matplotlib.figure.Figure`` with an Agg canvas and never through pyplot, so no
global backend is switched and no window opens.

Each ``plot_*`` function writes a PNG atomically. Each ``*_figure`` function
returns the figure itself, which :func:`render_png` turns into PNG bytes, for
example to embed in an HTML page.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union

import numpy as np

from i0tscore.fileio import atomic_open

from i0tscore.result import Contribution

PathLike = Union[str, "os.PathLike[str]"]

POSITIVE_COLOUR = "tab:blue"
"""Bar colour of dimensions that raise the score."""

NEGATIVE_COLOUR = "tab:red"
"""Bar colour of dimensions that lower the score."""

MATCHED_COLOUR = "tab:blue"
MISMATCHED_COLOUR = "tab:orange"

DPI = 100
"""Resolution of every PNG, in dots per inch; a 6-inch-wide figure is 600 pixels wide."""

MAX_SCATTER_LABELS = 30
"""Scatter plots with at most this many points label each point with its item id."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""


class ExplainedScore(Protocol):
    """Anything with I0T-S, CLIP-S and top contributions, such as :class:`~i0tscore.explain.Explanation`."""

    i0t_s: float
    clip_s: float
    top: Sequence[Contribution]


class Scores(Protocol):
    """Anything with per-item I0T-S and CLIP-S arrays, such as :class:`~i0tscore.result.ScoreResult`."""

    i0t_s: np.ndarray
    clip_s: np.ndarray


def import_matplotlib() -> tuple[Any, Any]:
    """Import matplotlib's ``Figure`` class and Agg canvas class.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        # The top-level import comes first so that a blocked or missing package is
        # detected even when submodules are still cached in sys.modules.
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError(
            f"Plotting needs matplotlib, which is not installed ({error}). "
            f"Install it with: pip install 'i0tscore[plot]'"
        ) from error
    return Figure, FigureCanvasAgg


def new_figure(width: float, height: float) -> Any:
    """Create a matplotlib figure of ``width`` × ``height`` inches on an Agg canvas."""
    figure_class, canvas_class = import_matplotlib()
    figure = figure_class(figsize=(width, height), layout="constrained")
    canvas_class(figure)
    return figure


def render_png(figure: Any) -> bytes:
    """Render a figure to PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_png(figure: Any, out: PathLike) -> Path:
    """Write a figure to ``out`` as PNG, atomically, and return the path.

    The figure is rendered in memory first, so a rendering error leaves ``out`` untouched.
    """
    png = render_png(figure)
    with atomic_open(out, "wb") as handle:
        handle.write(png)
    return Path(out)


# ---------------------------------------------------------------------- contributions


def contributions_figure(explanation: ExplainedScore) -> Any:
    """Draw the top contributions x'_d·y'_d of one explained score as horizontal bars.

    The largest |contribution| is at the top. Positive and negative bars have
    different colours, and the title gives I0T-S and CLIP-S.
    """
    top = list(explanation.top)
    height = 1.2 + 0.3 * max(len(top), 1)
    figure = new_figure(7.0, height)
    axes = figure.subplots()

    # barh draws the first bar at the bottom, so the list is reversed to put the largest on top.
    labels = [f"dim {c.dim}" for c in reversed(top)]
    values = [c.contribution for c in reversed(top)]
    colours = [POSITIVE_COLOUR if value >= 0 else NEGATIVE_COLOUR for value in values]
    axes.barh(labels, values, color=colours)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("contribution x'_d · y'_d to the standardized cosine")
    axes.set_title(
        f"I0T-S {explanation.i0t_s:.4f}   CLIP-S {explanation.clip_s:.4f}\n"
        f"top {len(top)} dimensions by |contribution|",
        fontsize=10,
    )
    return figure


def plot_contributions(explanation: ExplainedScore, out: PathLike) -> Path:
    """Write :func:`contributions_figure` of ``explanation`` to the PNG ``out``.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    return save_png(contributions_figure(explanation), out)


# ---------------------------------------------------------------------- score distributions


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def score_histograms_figure(matched: Scores, mismatched: Optional[Scores]) -> Any:
    """Draw histograms of CLIP-S and I0T-S, one panel per metric, matched and mismatched pairs overlaid.

    NaN scores (items skipped on error) are left out. ``mismatched`` may be None
    when no mismatched pairs exist, for example with a single item.
    """
    figure = new_figure(11.0, 4.0)
    panels = figure.subplots(1, 2)
    for axes, name, attribute in zip(panels, ("CLIP-S", "I0T-S"), ("clip_s", "i0t_s")):
        series = [("matched", MATCHED_COLOUR, _finite(getattr(matched, attribute)))]
        if mismatched is not None:
            series.append(("mismatched", MISMATCHED_COLOUR, _finite(getattr(mismatched, attribute))))
        everything = np.concatenate([values for _, _, values in series])
        # Shared bin edges make the two overlaid histograms comparable bar by bar.
        edges = np.histogram_bin_edges(everything, bins=20) if everything.size else 20
        for label, colour, values in series:
            axes.hist(values, bins=edges, alpha=0.55, color=colour, label=f"{label} (n={values.size})")
        axes.set_title(name)
        axes.set_xlabel(name)
        axes.set_ylabel("pairs")
        axes.legend(loc="best", fontsize=8)
    return figure


def plot_score_histograms(matched: Scores, mismatched: Optional[Scores], out: PathLike) -> Path:
    """Write :func:`score_histograms_figure` to the PNG ``out``.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    return save_png(score_histograms_figure(matched, mismatched), out)


def score_scatter_figure(clip_s: Any, i0t_s: Any, labels: Optional[Sequence[str]] = None) -> Any:
    """Draw CLIP-S against I0T-S, one point per item.

    Items where either score is NaN are left out. With at most
    :data:`MAX_SCATTER_LABELS` points, each point is labelled from ``labels``.
    """
    clip = np.asarray(clip_s, dtype=np.float64)
    i0t = np.asarray(i0t_s, dtype=np.float64)
    if clip.shape != i0t.shape:
        raise ValueError(f"clip_s has shape {clip.shape} but i0t_s has shape {i0t.shape}; give one value per item in each.")
    keep = np.isfinite(clip) & np.isfinite(i0t)

    figure = new_figure(6.0, 5.0)
    axes = figure.subplots()
    axes.scatter(clip[keep], i0t[keep], s=18, color=MATCHED_COLOUR)
    if labels is not None and int(keep.sum()) <= MAX_SCATTER_LABELS:
        for n in np.flatnonzero(keep):
            axes.annotate(str(labels[n]), (clip[n], i0t[n]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("CLIP-S")
    axes.set_ylabel("I0T-S")
    axes.set_title(f"CLIP-S and I0T-S per item (n={int(keep.sum())})", fontsize=10)
    axes.grid(True, linewidth=0.3)
    return figure


def plot_score_scatter(clip_s: Any, i0t_s: Any, out: PathLike, labels: Optional[Sequence[str]] = None) -> Path:
    """Write :func:`score_scatter_figure` to the PNG ``out``.

    Raises:
        MissingExtraError: matplotlib is not installed.
        ValueError: ``clip_s`` and ``i0t_s`` differ in shape.
    """
    return save_png(score_scatter_figure(clip_s, i0t_s, labels), out)
