"""Environment record, JSON output and markdown tables shared by the benchmark commands."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from correlation.scoring import METRIC_LABELS
from i0tscore.fileio import atomic_write


def environment() -> dict[str, str]:
    """Versions of Python and the libraries that determine the scores, and the platform."""
    import numpy
    import scipy
    import torch
    import transformers

    import i0tscore

    return {
        "python": platform.python_version(),
        "i0tscore": i0tscore.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
    }


def write_json(data: Mapping[str, Any], path: Optional[Path]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically, or to standard output when path is None.

    NaN (a correlation of a constant metric) is written as null, so the output is strict JSON.
    """
    text = json.dumps(_without_nan(data), indent=2, allow_nan=False) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    atomic_write(path, text)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value


def correlation_table(results: Mapping[str, Mapping[str, float]], primary: str, published: Mapping[str, float]) -> str:
    """Markdown table of τ-c, τ-b and Pearson per metric, the primary measure first, with published values.

    Args:
        results: metric key → output of ``metrics.correlations``.
        primary: ``"tau_c"`` or ``"tau_b"``, the measure the field reports for this dataset.
        published: metric key → published value of the primary measure (× 100).
    """
    names = {"tau_c": "τ-c", "tau_b": "τ-b"}
    secondary = "tau_b" if primary == "tau_c" else "tau_c"
    lines = [
        f"| metric | {names[primary]} (measured) | {names[primary]} (published) | {names[secondary]} | Pearson r | n |",
        "|---|---|---|---|---|---|",
    ]
    for key, values in results.items():
        lines.append(
            f"| {METRIC_LABELS.get(key, key)} | {values[primary]:.2f} | {_published(published, key)} "
            f"| {values[secondary]:.2f} | {values['pearson']:.2f} | {values['n']} |"
        )
    return "\n".join(lines) + "\n"


def accuracy_table(results: Mapping[str, Mapping[str, float]], columns: list[str], published: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of accuracies per metric, each column as "measured (published)"."""
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for key, values in results.items():
        cells = [f"{values[column]:.1f} ({_published(published.get(key, {}), column)})" for column in columns]
        lines.append(f"| {METRIC_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nPublished values in brackets; '–' where none exists.\n"


def _published(values: Mapping[str, float], key: str) -> str:
    return f"{values[key]:.1f}" if key in values else "–"
