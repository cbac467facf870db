"""I0T-S and CLIP-S behind the scorer interface of pycocoevalcap.

pycocoevalcap's scorers (``Bleu``, ``Cider``, ...) take ``gts`` and ``res``,
dicts from image id to a list of captions. They check that both have the same
ids and exactly one candidate caption per id. They return the corpus score and
the per-item scores in the order of ``gts.keys()``. :class:`I0TScorer` follows the
same contract (checked against pycocoevalcap 1.2), so it fits in lists of
scorers such as ``[(Bleu(4), [...]), (Cider(), "CIDEr"), (I0TScorer(paths), "I0T-S")]``.

Inside ``COCOEvalCap`` the captions reach every scorer after PTB tokenization
(lowercased, punctuation removed). CLIP reads raw text best, so call
``compute_score`` with the raw captions where you can. Entries may be strings
or, as before tokenization, dicts with a ``"caption"`` field.
"""

from __future__ import annotations

import os
from typing import Any, Hashable, Mapping, Optional, Union

import numpy as np

from i0tscore.scorer import I0TScore

__all__ = ["I0TScorer", "SCORES"]

SCORES = {
    "i0t_s": "I0T-S",
    "clip_s": "CLIP-S",
    "ref_i0t_s": "Ref-I0T-S",
    "ref_clip_s": "RefCLIP-S",
}
"""The scores :class:`I0TScorer` can return, by option value, with the name ``method()`` reports."""


class I0TScorer:
    """A pycocoevalcap-style scorer returning I0T-S, CLIP-S or a reference-based variant.

    Args:
        image_paths: image id → image file (or any image input ``I0TScore`` accepts).
        score: ``"i0t_s"`` (default), ``"clip_s"``, ``"ref_i0t_s"`` or
            ``"ref_clip_s"``. The reference-based scores take the references from ``gts``.
        scorer: an existing :class:`~i0tscore.I0TScore` to use, so that several
            ``I0TScorer`` objects share one loaded model.
        **scorer_kwargs: arguments for a new :class:`~i0tscore.I0TScore`
            (``model``, ``stats``, ``device``, ...), when ``scorer`` is not given.

    Example:
        >>> scorer = I0TScorer({1: "images/1.jpg"}, model="openai/clip-vit-base-patch32")  # doctest: +SKIP
        >>> mean, per_item = scorer.compute_score({1: ["a dog on grass"]}, {1: ["a dog runs"]})  # doctest: +SKIP
    """

    def __init__(
        self,
        image_paths: Mapping[Hashable, Union[str, "os.PathLike[str]", Any]],
        *,
        score: str = "i0t_s",
        scorer: Optional[I0TScore] = None,
        **scorer_kwargs: Any,
    ) -> None:
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; expected one of {', '.join(SCORES)}.")
        if scorer is not None and scorer_kwargs:
            raise ValueError(f"Pass either scorer= or the arguments to create one, not both (got {', '.join(sorted(scorer_kwargs))}).")
        self.image_paths = dict(image_paths)
        self.score = score
        self.scorer = scorer if scorer is not None else I0TScore(**scorer_kwargs)

    def method(self) -> str:
        """Return the score's name, as pycocoevalcap's scorers do (``"I0T-S"``, ``"CLIP-S"``, ...)."""
        return SCORES[self.score]

    def compute_score(self, gts: Mapping[Hashable, list], res: Mapping[Hashable, list]) -> tuple[float, np.ndarray]:
        """Score each candidate caption in ``res`` against its image.

        Args:
            gts: image id → list of reference captions (at least one each).
            res: image id → list holding exactly one candidate caption.

        Returns:
            The mean score and a float64 array of per-item scores, in the order
            of ``gts.keys()``, as pycocoevalcap's ``Bleu`` and ``Cider`` return them.

        Raises:
            ValueError: ``gts`` and ``res`` have different ids, an id has no image
                path, a candidate list does not hold exactly one caption, or a
                reference list is empty.
        """
        ids = self._check_ids(gts, res)
        candidates = [_one_caption(res[image_id], image_id) for image_id in ids]
        images = [self.image_paths[image_id] for image_id in ids]
        references = None
        if self.score.startswith("ref_"):
            references = [_references(gts[image_id], image_id) for image_id in ids]
        else:
            for image_id in ids:
                _references(gts[image_id], image_id)

        result = self.scorer.score(images, candidates, references)
        per_item = np.asarray(getattr(result, self.score), dtype=np.float64)
        return float(per_item.mean()), per_item

    def _check_ids(self, gts: Mapping[Hashable, list], res: Mapping[Hashable, list]) -> list[Hashable]:
        if gts.keys() != res.keys():
            only_gts = sorted(map(repr, gts.keys() - res.keys()))
            only_res = sorted(map(repr, res.keys() - gts.keys()))
            raise ValueError(
                f"gts and res must have the same image ids. Only in gts: {_preview(only_gts)}; "
                f"only in res: {_preview(only_res)}."
            )
        if not gts:
            raise ValueError("gts and res are empty; there is nothing to score.")
        missing = [repr(image_id) for image_id in gts if image_id not in self.image_paths]
        if missing:
            raise ValueError(
                f"No image path for image id(s) {_preview(missing)}; add them to the image_paths passed to I0TScorer."
            )
        return list(gts.keys())


def _caption_text(entry: Any, image_id: Hashable, what: str) -> str:
    if isinstance(entry, Mapping) and "caption" in entry:
        entry = entry["caption"]
    if not isinstance(entry, str):
        raise ValueError(f"{what} for image id {image_id!r} contains a {type(entry).__name__}; expected a caption string.")
    return entry


def _one_caption(candidates: Any, image_id: Hashable) -> str:
    if not isinstance(candidates, list) or len(candidates) != 1:
        count = len(candidates) if isinstance(candidates, list) else type(candidates).__name__
        raise ValueError(
            f"res[{image_id!r}] must be a list with exactly one candidate caption, as pycocoevalcap's "
            f"scorers require; got {count}. Score several candidates per image in separate calls."
        )
    return _caption_text(candidates[0], image_id, "res")


def _references(refs: Any, image_id: Hashable) -> list[str]:
    if not isinstance(refs, list) or not refs:
        raise ValueError(f"gts[{image_id!r}] must be a non-empty list of reference captions, got {refs!r}.")
    return [_caption_text(ref, image_id, "gts") for ref in refs]


def _preview(values: list[str], limit: int = 5) -> str:
    if not values:
        return "none"
    listed = ", ".join(values[:limit])
    return listed if len(values) <= limit else f"{listed} and {len(values) - limit} more"
