"""Load a Hugging Face CLIP checkpoint and encode images and captions with it.

Loading is safetensors-only and never runs remote code: the model class is
always ``transformers.CLIPModel``. Embeddings are the projected CLIP embeddings,
L2-normalized, returned as float32 on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from i0tscore.fileio import sha256_file
from i0tscore.statistics import ModelIdentity

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class ModelLoadError(OSError):
    """A CLIP checkpoint could not be found or loaded."""


def resolve_device(device: Union[None, str, torch.device]) -> torch.device:
    """Pick CUDA, then MPS, then CPU when ``device`` is None; otherwise use ``device``."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: Union[str, torch.dtype], device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype, rejecting float16 on the CPU.

    Raises:
        ValueError: an unknown dtype, or float16 requested on the CPU, where
            many CLIP operations have no half-precision kernels.
    """
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    else:
        name = str(dtype)
    if name not in _DTYPES:
        raise ValueError(f"Unsupported dtype {dtype!r}; expected one of {', '.join(_DTYPES)}.")
    if name == "float16" and device.type == "cpu":
        raise ValueError(
            "dtype float16 is not supported on the CPU. Use float32 (the default) or bfloat16 on the CPU, "
            "or pass a CUDA device for float16."
        )
    return _DTYPES[name]


@dataclass
class ClipEncoder:
    """A loaded CLIP model with its tokenizer and image processor.

    Attributes:
        model: the ``transformers.CLIPModel``, in eval mode.
        tokenizer: the checkpoint's tokenizer.
        image_processor: the checkpoint's image processor.
        identity: model id, revision and weights fingerprint.
        device: where the model runs.
        dtype: the model's parameter dtype.
        max_length: maximum caption length in tokens, special tokens included.
    """

    model: "torch.nn.Module"
    tokenizer: object
    image_processor: object
    identity: ModelIdentity
    device: torch.device
    dtype: torch.dtype
    max_length: int

    @property
    def dim(self) -> int:
        """Dimension of the projected embeddings."""
        return int(self.model.config.projection_dim)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Tokenize, truncating long captions so the end-of-text token stays last.

        Returns:
            input ids (N, L), attention mask (N, L), and a per-caption flag that
            is True where the caption was truncated.
        """
        encoded = self.tokenizer(list(captions), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        eos_id = self.tokenizer.eos_token_id
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_id

        truncated = [len(ids) > self.max_length for ids in encoded]
        encoded = [ids[: self.max_length - 1] + [eos_id] if cut else ids for ids, cut in zip(encoded, truncated)]

        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask, truncated

    @torch.inference_mode()
    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalized projected text embeddings, float32 on the CPU."""
        output = self.model.get_text_features(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
        )
        return _normalized(_projected(output))

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalized projected image embeddings, float32 on the CPU."""
        output = self.model.get_image_features(pixel_values=pixel_values.to(self.device, self.dtype))
        return _normalized(_projected(output))

    def preprocess(self, images: Sequence[object]) -> torch.Tensor:
        """Resize, crop and normalize RGB PIL images with the checkpoint's image processor."""
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def _projected(output: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected
    # embedding; transformers 4.x returns the tensor itself.
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"Unexpected output type {type(output).__name__} from the CLIP feature methods.")
    return pooled


def _normalized(embeds: torch.Tensor) -> torch.Tensor:
    embeds = embeds.float()
    return (embeds / torch.linalg.vector_norm(embeds, dim=-1, keepdim=True).clamp_min(1e-12)).cpu()


def load_clip(
    model: Union[str, os.PathLike] = DEFAULT_MODEL,
    *,
    revision: Optional[str] = None,
    device: Union[None, str, torch.device] = None,
    dtype: Union[str, torch.dtype] = "float32",
) -> ClipEncoder:
    """Load a CLIP checkpoint by hub id or local folder.

    Args:
        model: a Hugging Face hub id such as ``openai/clip-vit-base-patch32``,
            or a local folder written by ``save_pretrained``.
        revision: a hub branch, tag or commit; ignored for local folders.
        device: ``cuda``, ``mps``, ``cpu`` or None to pick the first available.
        dtype: ``float32`` (default), ``bfloat16``, or ``float16`` (GPU only).

    Raises:
        ModelLoadError: the checkpoint is missing, offline and not cached, or
            has no safetensors weights.
        ValueError: an unsupported dtype for the device.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    local = Path(model).is_dir()
    kwargs = {} if local else {"revision": revision or "main"}

    try:
        clip = CLIPModel.from_pretrained(str(model), use_safetensors=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(model), **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(str(model), **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_hint(model, err)) from err

    clip = clip.to(device=resolved_device, dtype=resolved_dtype).eval()
    for parameter in clip.parameters():
        parameter.requires_grad_(False)

    identity = _identity(model, revision, local)
    max_length = int(clip.config.text_config.max_position_embeddings)
    logger.info("Loaded %s on %s as %s", identity.describe(), resolved_device, resolved_dtype)
    return ClipEncoder(
        model=clip,
        tokenizer=tokenizer,
        image_processor=image_processor,
        identity=identity,
        device=resolved_device,
        dtype=resolved_dtype,
        max_length=max_length,
    )


def _load_hint(model: Union[str, os.PathLike], err: Exception) -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        cache = "~/.cache/huggingface/hub"
    return (
        f"Cannot load the CLIP model {str(model)!r}: {err}\n"
        f"Hub models are cached in {cache}. When offline, or on a machine without access to the "
        f"Hugging Face hub, download the model elsewhere (e.g. `huggingface-cli download {model}`) "
        f"and pass the local folder instead: --model /path/to/folder (model=... in Python). "
        f"Only safetensors weights are loaded."
    )


def _identity(model: Union[str, os.PathLike], revision: Optional[str], local: bool) -> ModelIdentity:
    if local:
        folder = Path(model).resolve()
        weights = sorted(folder.glob("*.safetensors"))
        digest = sha256_file(weights[0]) if len(weights) == 1 else _combined_digest(weights)
        return ModelIdentity(model_id=folder.name, revision=None, weights_sha256=digest)
    return ModelIdentity(model_id=str(model), revision=_resolved_revision(str(model), revision))


def _combined_digest(files: list[Path]) -> Optional[str]:
    if not files:
        return None
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def _resolved_revision(model_id: str, revision: Optional[str]) -> Optional[str]:
    # The hub cache stores files under snapshots/<commit hash>/, so the folder
    # of the cached config names the commit a branch or tag resolved to.
    try:
        from transformers.utils import cached_file

        config_path = cached_file(model_id, "config.json", revision=revision or "main")
    except (OSError, ValueError):
        return revision
    if config_path is None:
        return revision
    parent = Path(config_path).parent
    return parent.name if parent.parent.name == "snapshots" else revision
