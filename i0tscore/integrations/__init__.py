"""Adapters to other evaluation frameworks.

Each adapter is a submodule that imports its framework only when imported
itself, so ``import i0tscore`` needs none of them:

* :mod:`i0tscore.integrations.torchmetrics`: ``I0TScoreMetric``, a
  ``torchmetrics.Metric`` (install ``i0tscore[torchmetrics]``);
* :mod:`i0tscore.integrations.coco`: ``I0TScorer``, a scorer with the
  ``compute_score(gts, res)`` interface of pycocoevalcap (no extra dependency).
"""
