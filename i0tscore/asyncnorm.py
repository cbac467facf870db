"""I0T_async: per-encoder BatchNorm layers trained on a frozen CLIP.

I0T_async (An et al., "I0T: Embedding Standardization Method Towards Zero
Modality Gap", ACL 2025) puts one ``BatchNorm1d`` (affine, eps 1e-5, momentum
0.1) after each CLIP encoder. Each layer takes the L2-normalized projected
embedding, and its output is L2-normalized again:

    x̃ = normalize(BN_image(normalize(x))),   ỹ = normalize(BN_text(normalize(y)))

Only the two layers train (see :mod:`i0tscore.asyncnorm_train`). At inference
the layers use their running statistics, so a single pair is scored as x̃·ỹ
without modality means taken over a corpus.

A layers file is safetensors (never pickle). It contains the two layers' weight,
bias, running mean, running variance and batch counter, and one metadata entry
``"i0tscore"``: a JSON object with the format, the CLIP model the layers were
trained on (id, revision, weights fingerprint), the dimension, the caption
prefix, the training settings and history, the package version, and a SHA-256
over the tensors and that JSON. :meth:`AsyncNorm.load` recomputes the SHA-256
and rejects a file whose content does not match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from i0tscore import functional as F
from i0tscore._version import __version__
from i0tscore.fileio import atomic_write, sha256_bytes
from i0tscore.statistics import DEFAULT_PREFIX, ModelIdentity, _same_model

FORMAT = "i0tscore-async-layers"
FORMAT_VERSION = 1
METADATA_KEY = "i0tscore"
"""The one safetensors metadata key. safetensors 0.8 writes metadata keys in a
per-process random order, so a file with two or more keys is not byte-reproducible."""

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
CYCLIC_WEIGHT = 0.25
"""Weight of each CyCLIP consistency term in the I0T_async loss (Goel et al., 2022)."""

ENCODERS = ("image", "text")
TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

TRAIN_HINT = "Train layers for this model with `i0tscore train-async --model MODEL --data CORPUS --out FILE`."


class AsyncNormError(ValueError):
    """A layers file is invalid, corrupted, or made for another model."""


class AsyncNorm(torch.nn.Module):
    """The two BatchNorm layers of I0T_async and the facts needed to trust them.

    In training mode (``module.train()``), :meth:`forward` normalizes with the
    batch statistics and updates the running statistics, as ``BatchNorm1d``
    does. :meth:`transform_image` and :meth:`transform_text` always use the
    running statistics, in float64, so a score does not depend on the batch.

    Args:
        dim: the CLIP projection dimension D.
        model: the CLIP checkpoint whose embeddings the layers take.
        prefix: caption prefix the text layer was trained with.
        training: training settings and data counts, stored in the file.
        history: per-epoch training loss and held-out centroid distances.
        source: where the layers were loaded from; not stored in the file.
    """

    def __init__(
        self,
        dim: int,
        *,
        model: ModelIdentity,
        prefix: str = DEFAULT_PREFIX,
        training: Optional[dict[str, Any]] = None,
        history: Optional[dict[str, Any]] = None,
        source: str = "memory",
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise AsyncNormError(f"The embedding dimension must be a positive integer, got {dim!r}.")
        self.image = torch.nn.BatchNorm1d(dim, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True)
        self.text = torch.nn.BatchNorm1d(dim, eps=BN_EPS, momentum=BN_MOMENTUM, affine=True)
        self.model = model
        self.prefix = prefix
        self.training_settings: dict[str, Any] = dict(training or {})
        self.history: dict[str, Any] = dict(history or {})
        self.source = source
        self.package_version = __version__

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.image.num_features)

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalize, apply each modality's layer in the current mode, normalize again.

        Args:
            image_embeds: (N, D) image embeddings on the layers' device.
            text_embeds: (N, D) caption embeddings, row n matched with image row n.

        Returns:
            x̃ and ỹ, each (N, D) with unit rows, differentiable in the layers' parameters.
        """
        image = F.l2_normalize(self.image(F.l2_normalize(image_embeds)))
        text = F.l2_normalize(self.text(F.l2_normalize(text_embeds)))
        return image, text

    # ------------------------------------------------------------------ inference

    def transform_image(self, image_embeds: Any) -> torch.Tensor:
        """Map image embeddings (N, D) to x̃ with the running statistics; float64 on the CPU."""
        return _apply_running(self.image, _as_embeddings(image_embeds, "image_embeds", self.dim))

    def transform_text(self, text_embeds: Any) -> torch.Tensor:
        """Map caption embeddings (N, D) to ỹ with the running statistics; float64 on the CPU."""
        return _apply_running(self.text, _as_embeddings(text_embeds, "text_embeds", self.dim))

    def check_model(self, model: ModelIdentity, dim: int, *, allow_model_mismatch: bool = False) -> None:
        """Raise if these layers do not fit ``model`` of embedding dimension ``dim``.

        The dimension must always match. The model must match too unless
        ``allow_model_mismatch`` is set: same weights fingerprint when both sides
        have one, otherwise the same model id and, when both are known, revision.

        Raises:
            AsyncNormError: another dimension, or another model.
        """
        if dim != self.dim:
            raise AsyncNormError(
                f"Async layers {self.source} have dimension {self.dim} ({self.model.describe()}), "
                f"but the model {model.describe()} produces embeddings of dimension {dim}. {TRAIN_HINT}"
            )
        if allow_model_mismatch or _same_model(self.model, model):
            return
        raise AsyncNormError(
            f"Async layers {self.source} were trained on {self.model.describe()}, not on "
            f"{model.describe()}. Layers trained on another model's embeddings do not remove this "
            f"model's modality gap. {TRAIN_HINT} To use them anyway, pass allow_model_mismatch=True."
        )

    # ------------------------------------------------------------------ file format

    @property
    def checksum(self) -> str:
        """SHA-256 over the tensors and the metadata: the layers' identity in signatures."""
        return _content_digest(self._tensors(), self._payload())

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name in ENCODERS:
            layer = getattr(self, name)
            for key in TENSORS:
                tensors[f"{name}.{key}"] = getattr(layer, key).detach().cpu().contiguous().clone()
        return tensors

    def _payload(self) -> dict[str, Any]:
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model.model_id,
            "revision": self.model.revision,
            "weights_sha256": self.model.weights_sha256,
            "dim": self.dim,
            "prefix": self.prefix,
            "eps": BN_EPS,
            "momentum": BN_MOMENTUM,
            "package_version": self.package_version,
            "training": self.training_settings,
            "history": self.history,
        }
        return json.loads(_canonical(payload))

    def to_bytes(self) -> bytes:
        """Serialize to the safetensors file format; the same layers and settings give the same bytes."""
        tensors = self._tensors()
        payload = self._payload()
        payload["sha256"] = _content_digest(tensors, payload)
        return save_safetensors(tensors, metadata={METADATA_KEY: _canonical(payload).decode()})

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the layers to ``path`` atomically."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "AsyncNorm":
        """Read and verify a layers file, in eval mode on the CPU.

        Raises:
            FileNotFoundError: the file does not exist.
            AsyncNormError: not a layers file, checksum mismatch, wrong shapes,
                or non-finite values.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Async layers file not found: {path}. {TRAIN_HINT}")
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "memory") -> "AsyncNorm":
        """Parse and verify the bytes of a layers file."""
        payload, tensors = _parse(data, source)
        stored = payload.pop("sha256", None)
        actual = _content_digest(tensors, payload)
        if stored != actual:
            raise AsyncNormError(
                f"Checksum mismatch in async layers file {source}: the file stores sha256 {stored}, "
                f"its content hashes to {actual}. The file was edited or corrupted after it was "
                f"written; train the layers again with `i0tscore train-async`."
            )
        dim = _check_tensors(tensors, payload, source)
        try:
            layers = cls(
                dim,
                model=ModelIdentity(payload["model_id"], payload.get("revision"), payload.get("weights_sha256")),
                prefix=payload["prefix"],
                training=payload.get("training"),
                history=payload.get("history"),
                source=source,
            )
        except KeyError as err:
            raise AsyncNormError(f"Async layers file {source} is missing the key {err.args[0]!r}.") from err
        layers.package_version = payload.get("package_version", "unknown")
        layers.load_state_dict(tensors)
        return layers.eval()


# ---------------------------------------------------------------------- losses


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over a batch's image–text logits.

    Args:
        image: (N, D) unit image embeddings; row n is matched with text row n.
        text: (N, D) unit caption embeddings.
        scale: the logit multiplier, exp(logit_scale) of the CLIP model.

    Returns:
        The mean of the image→text and text→image cross-entropies, a scalar.
    """
    logits = scale * image @ text.T
    targets = torch.arange(image.shape[0], device=image.device)
    image_to_text = torch.nn.functional.cross_entropy(logits, targets)
    text_to_image = torch.nn.functional.cross_entropy(logits.T, targets)
    return (image_to_text + text_to_image) / 2


def cyclic_losses(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CyCLIP's in-modal and cross-modal consistency terms over a batch.

    With unit embeddings I (images) and T (captions) of one batch of N pairs
    (Goel et al., "CyCLIP: Cyclic Contrastive Language-Image Pretraining",
    NeurIPS 2022):

    * in-modal: mean over the N² entries of (I Iᵀ − T Tᵀ)², which is zero
      when image–image and text–text cosines agree;
    * cross-modal: mean over the N² entries of (I Tᵀ − T Iᵀ)², which is zero
      when cos(I_j, T_k) = cos(I_k, T_j) for all j, k.

    Both are taken on cosines, without the logit scale.

    Returns:
        (in-modal term, cross-modal term), two scalars.
    """
    image_image = image @ image.T
    text_text = text @ text.T
    image_text = image @ text.T
    in_modal = (image_image - text_text).square().mean()
    cross_modal = (image_text - image_text.T).square().mean()
    return in_modal, cross_modal


def async_loss(image: torch.Tensor, text: torch.Tensor, *, scale: float, cyclic: bool = True) -> torch.Tensor:
    """Compute the I0T_async loss: contrastive loss plus 0.25 × each CyCLIP term when ``cyclic``."""
    loss = contrastive_loss(image, text, scale)
    if cyclic:
        in_modal, cross_modal = cyclic_losses(image, text)
        loss = loss + CYCLIC_WEIGHT * in_modal + CYCLIC_WEIGHT * cross_modal
    return loss


# ---------------------------------------------------------------------- scoring


def async_score(layers: AsyncNorm, image_embeds: Any, text_embeds: Any) -> torch.Tensor:
    """Score each matched pair with x̃·ỹ, returning float64 values of shape (N,) in [−1, 1].

    Args:
        layers: trained layers for the model that produced the embeddings.
        image_embeds: (N, D) image embeddings (normalized here).
        text_embeds: (N, D) caption embeddings, encoded with ``layers.prefix``.

    Raises:
        ValueError: shapes that do not match each other or the layers' dimension.
    """
    image = layers.transform_image(image_embeds)
    text = layers.transform_text(text_embeds)
    if image.shape[0] != text.shape[0]:
        raise ValueError(
            f"image_embeds has {image.shape[0]} rows but text_embeds has {text.shape[0]}; "
            f"row n of each must be a matched pair."
        )
    return (image * text).sum(dim=-1)


def centroid_distance(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> float:
    """‖mean(x) − mean(y)‖ of row-normalized embeddings, in float64."""
    image = F.l2_normalize(image_embeds.double())
    text = F.l2_normalize(text_embeds.double())
    return float(F.centroid_distance(image, text))


# ---------------------------------------------------------------------- helpers


def _apply_running(layer: torch.nn.BatchNorm1d, embeds: torch.Tensor) -> torch.Tensor:
    # Evaluation-mode BatchNorm written out in float64, so each row's output
    # depends on that row and the stored statistics only.
    mean = layer.running_mean.detach().cpu().double()
    var = layer.running_var.detach().cpu().double()
    weight = layer.weight.detach().cpu().double()
    bias = layer.bias.detach().cpu().double()
    normalized = (F.l2_normalize(embeds) - mean) / torch.sqrt(var + layer.eps)
    return F.l2_normalize(normalized * weight + bias)


def _as_embeddings(value: Any, name: str, dim: int) -> torch.Tensor:
    tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.ndim != 2 or tensor.shape[1] != dim:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected (N, {dim}) for these layers.")
    if not torch.is_floating_point(tensor):
        raise ValueError(f"{name} has dtype {tensor.dtype}; expected floating-point embeddings.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return tensor.double()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _content_digest(tensors: dict[str, torch.Tensor], payload: dict[str, Any]) -> str:
    # Hashes what the file means, not its bytes: the canonical metadata JSON,
    # then each tensor's name, dtype, shape and little-endian values in name order.
    parts = [_canonical(payload)]
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = f"{name}|{str(tensor.dtype).replace('torch.', '')}|{list(tensor.shape)}".encode()
        array = tensor.numpy()
        parts.append(header + b"\0" + array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return sha256_bytes(b"\0".join(parts))


def read_safetensors_json(data: bytes, source: str, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a safetensors file's tensors and the JSON object stored under metadata ``key``, unverified.

    Raises:
        AsyncNormError: the bytes are not safetensors, or the metadata entry is
            missing or not a JSON object.
    """
    hint = f"{source} is not a valid i0tscore safetensors file"
    try:
        tensors = load_safetensors(data)
        header_length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_length])
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise AsyncNormError(f"{hint}: {err}. The file was edited, truncated or corrupted.") from err

    text = (header.get("__metadata__") or {}).get(key)
    if text is None:
        raise AsyncNormError(f"{hint}: it has no {key!r} metadata entry. {TRAIN_HINT}")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise AsyncNormError(f"{hint}: its metadata is not valid JSON ({err}); the file was edited or corrupted.") from err
    if not isinstance(payload, dict):
        raise AsyncNormError(f"{hint}: its {key!r} metadata is not a JSON object.")
    return payload, tensors


def _parse(data: bytes, source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split a layers file into its metadata JSON and its tensors, checking the format but not the checksum."""
    payload, tensors = read_safetensors_json(data, source, METADATA_KEY)
    if payload.get("format") != FORMAT:
        raise AsyncNormError(f'{source} is not an i0tscore async layers file: expected metadata "format": "{FORMAT}". {TRAIN_HINT}')
    if payload.get("format_version") != FORMAT_VERSION:
        raise AsyncNormError(
            f"Async layers file {source} has format_version {payload.get('format_version')!r}; "
            f"this version of i0tscore reads version {FORMAT_VERSION}."
        )
    return payload, tensors


def _check_tensors(tensors: dict[str, torch.Tensor], payload: dict[str, Any], source: str) -> int:
    """Check names, shapes, dtypes and values of verified tensors; return the dimension."""
    expected = {f"{name}.{key}" for name in ENCODERS for key in TENSORS}
    if set(tensors) != expected:
        raise AsyncNormError(
            f"Async layers file {source} contains tensors {sorted(tensors)}; expected {sorted(expected)}."
        )
    dim = payload.get("dim")
    if not isinstance(dim, int) or dim < 1:
        raise AsyncNormError(f"Async layers file {source} declares an invalid dim {dim!r}.")
    for name, tensor in sorted(tensors.items()):
        if name.endswith("num_batches_tracked"):
            if tensor.shape != () or tensor.dtype != torch.int64:
                raise AsyncNormError(f"Async layers file {source}: {name} must be an int64 scalar.")
            continue
        if tensor.shape != (dim,) or tensor.dtype != torch.float32:
            raise AsyncNormError(
                f"Async layers file {source}: {name} has shape {tuple(tensor.shape)} and dtype {tensor.dtype}; "
                f"expected ({dim},) float32 for the declared dim."
            )
        if not torch.isfinite(tensor).all():
            bad = int(torch.nonzero(~torch.isfinite(tensor))[0, 0])
            raise AsyncNormError(
                f"Async layers file {source}: {name} contains a non-finite value ({tensor[bad].item()}) at "
                f"dimension {bad}. Train the layers again."
            )
        if name.endswith("running_var") and (tensor < 0).any():
            raise AsyncNormError(f"Async layers file {source}: {name} contains a negative variance.")
    return dim


__all__ = [
    "AsyncNorm",
    "AsyncNormError",
    "BN_EPS",
    "BN_MOMENTUM",
    "CYCLIC_WEIGHT",
    "FORMAT",
    "FORMAT_VERSION",
    "async_loss",
    "async_score",
    "centroid_distance",
    "contrastive_loss",
    "cyclic_losses",
    "read_safetensors_json",
]
