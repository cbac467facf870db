"""Build small random-weight CLIP checkpoints on the CPU, offline.

The checkpoint is a real ``transformers.CLIPModel`` with a working CLIP
tokenizer (byte-level, no merges, so every character is a token) and a CLIP
image processor, written with ``save_pretrained`` and meant to be loaded back
through ``from_pretrained``, as users load hub checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def char_tokenizer(max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte-level characters, plain and word-final."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: n for n, char in enumerate(alphabet)}
    vocab.update({char + "</w>": len(alphabet) + n for n, char in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_tiny_clip(
    folder: Path,
    *,
    seed: int = 0,
    projection_dim: int = 32,
    image_size: int = 32,
    max_length: int = 32,
) -> Path:
    """Write a seeded random CLIP checkpoint to ``folder`` and return it."""
    tokenizer = char_tokenizer(max_length)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer.get_vocab()),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
        resample=3,  # bicubic
        do_convert_rgb=True,
    )

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
