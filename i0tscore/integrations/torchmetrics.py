"""I0T-S and CLIP-S as a ``torchmetrics.Metric`` (install ``i0tscore[torchmetrics]``).

The metric keeps sums and counts, reduced with ``sum`` across processes, so the
value after synchronization is the mean over every item that every process saw.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Optional, Sequence, Union

try:
    from torchmetrics import Metric
except ImportError as err:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "i0tscore.integrations.torchmetrics needs torchmetrics, which is not installed. "
        "Install the extra with: pip install 'i0tscore[torchmetrics]'"
    ) from err

import numpy as np
import torch

from i0tscore.images import ImageInput
from i0tscore.model import DEFAULT_MODEL
from i0tscore.scorer import I0TScore
from i0tscore.statistics import Statistics

__all__ = ["I0TScoreMetric"]

_SCORER_ARGUMENTS = frozenset(inspect.signature(I0TScore.__init__).parameters) - {"self", "model"}

_SCORES = ("i0t_s", "clip_s")
_REFERENCE_SCORES = ("ref_i0t_s", "ref_clip_s")


class _SharedScorer:
    """Holds the scorer so that copies of the metric share it instead of copying the model.

    ``nn.Module.to`` leaves plain attributes alone, and ``copy.deepcopy`` (used
    by ``Metric.clone`` and by some wrappers) returns this holder unchanged.
    The scorer's model is in eval mode with frozen weights, so sharing it is safe.
    """

    def __init__(self, scorer: I0TScore) -> None:
        self.scorer = scorer

    def __deepcopy__(self, memo: dict) -> "_SharedScorer":
        return self


class I0TScoreMetric(Metric):
    """Mean I0T-S and CLIP-S over all updates, and the reference-based means when references are given.

    The :class:`~i0tscore.I0TScore` scorer is created once, here, and reused by
    every update. Pass either a model with scorer arguments
    (``I0TScoreMetric("openai/clip-vit-base-patch32", stats="stats.json")``)
    or an existing scorer (``I0TScoreMetric(scorer=scorer)``). The scorer runs
    on its own device, so moving the metric with ``.to(...)`` moves only the
    sums and counts.

    Args:
        model: a hub id or local checkpoint folder, as for :class:`~i0tscore.I0TScore`.
        scorer: an existing scorer to use instead of creating one.
        on_error: ``"raise"`` stops at an unreadable image; ``"skip"`` leaves
            the item out of the means and counts it in ``num_skipped``.
        **kwargs: keyword arguments of :class:`~i0tscore.I0TScore` (``stats``,
            ``device``, ``dtype``, ``preset``, ...) go to the scorer; the rest
            (``sync_on_compute``, ``process_group``, ...) go to ``torchmetrics.Metric``.

    Raises:
        ValueError: both ``scorer`` and scorer arguments, or statistics taken
            from the scored set (``stats="corpus"``), which would make each
            update's scores depend on its batch.

    Note:
        The sums are float64, which the MPS backend does not support; keep the
        metric on the CPU or a CUDA device there.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"] = DEFAULT_MODEL,
        *,
        scorer: Optional[I0TScore] = None,
        on_error: str = "raise",
        **kwargs: Any,
    ) -> None:
        scorer_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in _SCORER_ARGUMENTS}
        super().__init__(**kwargs)

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        if scorer is not None:
            if scorer_kwargs or model != DEFAULT_MODEL:
                raise ValueError(
                    f"Pass either scorer= or the arguments to create one, not both "
                    f"(got scorer and {', '.join(sorted(scorer_kwargs)) or 'model'})."
                )
            if not isinstance(scorer, I0TScore):
                raise TypeError(f"scorer must be an i0tscore.I0TScore, got {type(scorer).__name__}.")
        else:
            scorer = I0TScore(model, **scorer_kwargs)
        # uses_corpus_means is the scorer's own test; older scorers without it use fixed means unless stats="corpus".
        uses_corpus_means = getattr(scorer, "uses_corpus_means", not isinstance(scorer.stats, Statistics))
        if uses_corpus_means:
            raise ValueError(
                "I0TScoreMetric needs fixed statistics, but the scorer takes the means from each scored set "
                "(stats='corpus'), so every update would use other means. Pass a statistics file or a shipped name."
            )
        self._shared = _SharedScorer(scorer)
        self.on_error = on_error

        for name in _SCORES + _REFERENCE_SCORES:
            self.add_state(f"{name}_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ref_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def scorer(self) -> I0TScore:
        """The scorer shared by all updates (and by copies of this metric)."""
        return self._shared.scorer

    def update(
        self,
        images: Sequence[ImageInput],
        captions: Sequence[str],
        references: Optional[Sequence[Sequence[str]]] = None,
    ) -> None:
        """Score a batch and add it to the sums.

        Args:
            images: N images (paths, PIL images, uint8 arrays or tensors).
            captions: N candidate captions.
            references: optional N non-empty lists of reference captions.
        """
        result = self.scorer.score(images, captions, references, on_error=self.on_error)
        valid = result.valid
        device = self.count.device

        for name in _SCORES:
            values = getattr(result, name)[valid]
            state = getattr(self, f"{name}_sum")
            setattr(self, f"{name}_sum", state + torch.tensor(float(np.sum(values)), dtype=torch.float64, device=device))
        if references is not None:
            for name in _REFERENCE_SCORES:
                values = getattr(result, name)[valid]
                state = getattr(self, f"{name}_sum")
                setattr(self, f"{name}_sum", state + torch.tensor(float(np.sum(values)), dtype=torch.float64, device=device))
            self.ref_count += int(valid.sum())
        self.count += int(valid.sum())
        self.num_skipped += int((~valid).sum())

    def compute(self) -> dict[str, torch.Tensor]:
        """Return the means: ``i0t_s`` and ``clip_s``, plus ``ref_i0t_s`` and ``ref_clip_s`` after updates with references.

        Each mean is a float64 scalar tensor, NaN when no item was scored.
        """
        means = {name: getattr(self, f"{name}_sum") / self.count for name in _SCORES}
        if int(self.ref_count) > 0:
            for name in _REFERENCE_SCORES:
                means[name] = getattr(self, f"{name}_sum") / self.ref_count
        return means
