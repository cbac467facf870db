"""i0tscore: I0T-S, a CLIP image-caption metric with the modality gap removed.

I0T-S standardizes CLIP embeddings post hoc (subtract each modality's mean of
L2-normalized embeddings, renormalize) and takes the cosine. It is reported
beside CLIP-S and RefCLIP-S, with per-dimension explanations.

Example:
    >>> from i0tscore import I0TScore
    >>> scorer = I0TScore()  # openai/clip-vit-base-patch32; downloads the model  # doctest: +SKIP
    >>> scorer.score(["cat.jpg"], ["a cat on a sofa"]).i0t_s  # doctest: +SKIP
"""

from i0tscore._version import __version__
from i0tscore.gap import GapMeasures, GapReport, modality_gap
from i0tscore.result import Contribution, ScoreResult
from i0tscore.scorer import PRESETS, I0TScore
from i0tscore.statistics import ModelIdentity, Statistics, StatisticsError

__all__ = [
    "Contribution",
    "GapMeasures",
    "GapReport",
    "I0TScore",
    "ModelIdentity",
    "PRESETS",
    "ScoreResult",
    "Statistics",
    "StatisticsError",
    "__version__",
    "modality_gap",
]
