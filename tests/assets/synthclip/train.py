"""Train the small synthetic-scene CLIP checkpoint and measure it on held-out scenes.

Usage:
    python tests/assets/synthclip/train.py --out tests/assets/synthclip/model

The script trains a byte-level BPE tokenizer on the captions. It then trains a small
`transformers.CLIPModel` from scratch on CPU, with a fixed contrastive temperature and
one-attribute hard negatives, and saves model, tokenizer and image processor with
`save_pretrained`. Finally it loads the saved folder back with `from_pretrained` and
writes the held-out metrics to `metrics.json` next to this file (or to `--metrics`).

`--evaluate-only DIR` skips training and recomputes the metrics of a saved folder.

NOTE: position is the attribute the model learns least well. A caption with the wrong
quadrant scores lower in about 70% of held-out cases, against 99% or more for the other
attributes (see README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402  (local module next to this script, not an installed package)

ASSET_DIR = Path(__file__).resolve().parent
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_TEXT_LENGTH = 32
"""Maximum caption length in tokens, including the start and end tokens."""
HELDOUT_SEED = 0
"""Seed of the held-out split used for the metrics, the same for every training seed."""
EVAL_CODE = 7
"""First element of the seeds that draw the corrupted held-out captions."""

# OpenAI CLIP's pixel statistics, so the processor config reads like a standard CLIP one.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSET_DIR / "model", help="output folder for the checkpoint")
    parser.add_argument("--metrics", type=Path, default=ASSET_DIR / "metrics.json", help="output path of the metrics JSON")
    parser.add_argument("--evaluate-only", type=Path, metavar="DIR", help="measure the checkpoint in DIR instead of training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train split, initialisation and batch order")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the train split")
    parser.add_argument("--train-size", type=int, default=16384, help="number of training scenes")
    parser.add_argument("--batch-size", type=int, default=128, help="scenes per optimizer step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument(
        "--temperature", type=float, default=0.005, help="fixed softmax temperature of the contrastive loss"
    )
    parser.add_argument("--heldout-size", type=int, default=500, help="held-out scenes used for the metrics")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads. Another value may give a slightly different checkpoint"
    )
    return parser.parse_args(argv)


def seed_everything(seed: int, threads: int) -> None:
    """Seed Python, numpy and torch, and make torch kernels deterministic on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(captions: list[str], max_merges: int = 2000) -> CLIPTokenizer:
    """Train a CLIP-style byte-level BPE tokenizer on captions.

    The BPE is trained with the same normalizer and pre-tokenizer that
    `transformers.CLIPTokenizer` (transformers 5) uses, so the learned merges apply
    unchanged. The vocabulary is laid out as in OpenAI CLIP: the 256 byte characters,
    the same 256 with the end-of-word suffix, the merge results in merge order, then
    the start and end tokens. Any text therefore encodes without unknown tokens.

    Args:
        captions: Training text.
        max_merges: Upper bound on the number of merges. Training stops earlier when
            no pair occurs at least twice.

    Returns:
        A `CLIPTokenizer` whose merges produce whole words for the caption vocabulary.
    """
    reference = CLIPTokenizer(vocab={BOS_TOKEN: 0, EOS_TOKEN: 1}, merges=[])
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD, unk_token=EOS_TOKEN))
    bpe.normalizer = reference.backend_tokenizer.normalizer
    bpe.pre_tokenizer = reference.backend_tokenizer.pre_tokenizer
    alphabet = sorted(ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=2 * len(alphabet) + max_merges + 2,
        min_frequency=2,
        initial_alphabet=alphabet,
        end_of_word_suffix=END_OF_WORD,
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer=trainer)

    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(char + END_OF_WORD for char in alphabet)]:
        vocab[token] = len(vocab)
    for left, right in merges:
        if left not in vocab or right not in vocab:
            raise RuntimeError(f"merge {left!r} + {right!r} uses a token missing from the vocabulary")
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)

    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_LENGTH)
    check_tokenizer(tokenizer, bpe, captions[:200])
    return tokenizer


def check_tokenizer(tokenizer: CLIPTokenizer, bpe: Tokenizer, captions: list[str]) -> None:
    """Raise RuntimeError unless the CLIP tokenizer splits captions as the trained BPE does, into whole words."""
    for text in captions:
        ids = tokenizer(text)["input_ids"]
        pieces = tokenizer.convert_ids_to_tokens(ids)
        expected = [BOS_TOKEN, *bpe.encode(text).tokens, EOS_TOKEN]
        if pieces != expected:
            raise RuntimeError(f"CLIPTokenizer pieces {pieces} differ from the trained BPE pieces {expected}")
        words = [piece for piece in pieces[1:-1] if piece.endswith(END_OF_WORD)]
        if len(pieces) - 2 != len(words):
            raise RuntimeError(f"caption {text!r} splits into sub-word pieces {pieces}; expected whole words")
        if len(ids) > MAX_TEXT_LENGTH:
            raise RuntimeError(f"caption {text!r} has {len(ids)} tokens, above the maximum {MAX_TEXT_LENGTH}")


# ---------------------------------------------------------------------------------------
# Model and data


def build_model(tokenizer: CLIPTokenizer, temperature: float) -> CLIPModel:
    """Create a small randomly initialised float32 CLIP model for 64 x 64 images.

    `logit_scale` is set to log(1 / temperature) and frozen. The text config's token ids
    match the tokenizer, because CLIP's text model pools at the first `eos_token_id`.
    """
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": MAX_TEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": scenes.IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=64,
        logit_scale_init_value=math.log(1.0 / temperature),
    )
    model = CLIPModel(config).float()
    model.logit_scale.requires_grad_(False)
    return model


def build_image_processor() -> CLIPImageProcessor:
    """Create the processor that resizes the shortest edge to 64 pixels (bicubic) and centre-crops 64 x 64."""
    return CLIPImageProcessor(
        size={"shortest_edge": scenes.IMAGE_SIZE},
        crop_size={"height": scenes.IMAGE_SIZE, "width": scenes.IMAGE_SIZE},
        resample=3,  # PIL.Image.BICUBIC
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )


def images_to_uint8(images: list) -> torch.Tensor:
    """Stack 64 x 64 RGB images into a uint8 tensor of shape (n, 3, 64, 64)."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Scale uint8 pixels to CLIP-normalized float32, as the image processor does for 64 x 64 input."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def check_pixel_path(processor: CLIPImageProcessor, images: list) -> None:
    """Raise RuntimeError unless the fast training normalization matches the image processor."""
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    actual = normalize_pixels(images_to_uint8(images))
    difference = (expected - actual).abs().max().item()
    if difference > 1e-4:
        raise RuntimeError(f"training pixels differ from CLIPImageProcessor output by {difference:.2e}")


def epoch_captions(split: scenes.Split, epoch: int, seed: int) -> tuple[list[str], list[str]]:
    """Draw a fresh caption and a one-attribute-wrong hard negative per training scene.

    Both captions of a scene use the same template and synonyms, so they differ only in
    the words of the changed attribute.
    """
    positives, negatives = [], []
    for index, scene in enumerate(split.scenes):
        rng = np.random.default_rng([seed, epoch, index])
        caption_seed = int(rng.integers(2**63))
        wrong = scenes.corrupt(scene, 1, rng)
        positives.append(scenes.caption(scene, np.random.default_rng(caption_seed)))
        negatives.append(scenes.caption(wrong, np.random.default_rng(caption_seed)))
    return positives, negatives


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    logit_scale: float,
) -> tuple[torch.Tensor, float]:
    """Compute the symmetric CLIP loss with hard-negative captions added to the image-to-text side.

    Args:
        image_embeds: L2-normalized image embeddings, shape (B, D).
        text_embeds: L2-normalized embeddings of the matching captions, shape (B, D).
        negative_embeds: L2-normalized embeddings of the hard-negative captions, shape (B, D).
        logit_scale: Inverse temperature that multiplies the cosines.

    Returns:
        The loss, and the fraction of images whose own caption has the highest logit.
    """
    targets = torch.arange(image_embeds.shape[0])
    all_texts = torch.cat([text_embeds, negative_embeds])
    image_to_text = logit_scale * image_embeds @ all_texts.T
    text_to_image = logit_scale * text_embeds @ image_embeds.T
    loss = 0.5 * (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets))
    accuracy = (image_to_text.argmax(dim=1) == targets).float().mean().item()
    return loss, accuracy


def encode(model: CLIPModel, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return L2-normalized image and text embeddings."""
    image_embeds = model.get_image_features(pixel_values=pixel_values).pooler_output
    text_embeds = model.get_text_features(input_ids=input_ids).pooler_output
    return F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)


def train(args: argparse.Namespace) -> dict:
    """Train and save the checkpoint into `args.out`. Returns a summary of the run."""
    started = time.perf_counter()
    seed_everything(args.seed, args.threads)

    print(f"rendering {args.train_size} training scenes", flush=True)
    split = scenes.make_split("train", args.train_size, seed=args.seed)
    pixels = images_to_uint8(split.images)

    tokenizer = build_tokenizer(split.captions)
    processor = build_image_processor()
    check_pixel_path(processor, split.images[:16])
    model = build_model(tokenizer, args.temperature)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    print(
        f"vocabulary {len(tokenizer)} tokens, {sum(p.numel() for p in parameters)} trainable parameters, "
        f"setup {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    steps_per_epoch = args.train_size // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = max(1, total_steps // 20)
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup_steps, 0.5 * (1.0 + math.cos(math.pi * step / total_steps))),
    )
    logit_scale = model.logit_scale.exp().item()
    order_generator = torch.Generator().manual_seed(args.seed)

    model.train()
    step = 0
    for epoch in range(args.epochs):
        positives, negatives = epoch_captions(split, epoch, args.seed)
        tokens = tokenizer(positives + negatives, padding="longest", return_tensors="pt")["input_ids"]
        positive_ids, negative_ids = tokens[: len(positives)], tokens[len(positives) :]
        order = torch.randperm(args.train_size, generator=order_generator)
        for batch_index in range(steps_per_epoch):
            batch = order[batch_index * args.batch_size : (batch_index + 1) * args.batch_size]
            pixel_values = normalize_pixels(pixels[batch])
            input_ids = torch.cat([positive_ids[batch], negative_ids[batch]])
            image_embeds, text_embeds = encode(model, pixel_values, input_ids)
            loss, accuracy = contrastive_loss(
                image_embeds, text_embeds[: len(batch)], text_embeds[len(batch) :], logit_scale
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 20 == 0 or step == total_steps:
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{total_steps} loss {loss.item():.4f} "
                    f"image-to-text batch accuracy {accuracy:.3f} elapsed {time.perf_counter() - started:.0f} s",
                    flush=True,
                )

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    training_seconds = time.perf_counter() - started
    print(f"saved {args.out} after {training_seconds:.0f} s", flush=True)
    return {
        "seconds": round(training_seconds, 1),
        "seed": args.seed,
        "epochs": args.epochs,
        "train_size": args.train_size,
        "batch_size": args.batch_size,
        "steps": total_steps,
        "learning_rate": args.lr,
        "temperature": args.temperature,
        "threads": args.threads,
    }


# ---------------------------------------------------------------------------------------
# Evaluation


def standardize(embeds: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Subtract a modality mean from L2-normalized embeddings and L2-normalize again."""
    centred = embeds - mean
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


def centroid_distance(image_embeds: np.ndarray, text_embeds: np.ndarray) -> float:
    """Return the distance between the mean image and the mean text embedding."""
    return float(np.linalg.norm(image_embeds.mean(axis=0) - text_embeds.mean(axis=0)))


def recall_at_1(image_embeds: np.ndarray, text_embeds: np.ndarray) -> tuple[float, float]:
    """Return image-to-text and text-to-image R@1 for pairs that share a row index."""
    similarity = image_embeds @ text_embeds.T
    targets = np.arange(len(image_embeds))
    return float(np.mean(similarity.argmax(axis=1) == targets)), float(np.mean(similarity.argmax(axis=0) == targets))


def embed_texts(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str]) -> np.ndarray:
    """Return L2-normalized text embeddings as float64 numpy, computed in batches of 256."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), 256):
            inputs = tokenizer(texts[start : start + 256], padding=True, return_tensors="pt")
            features = model.get_text_features(**inputs).pooler_output
            chunks.append(F.normalize(features, dim=-1).double().numpy())
    return np.concatenate(chunks)


def embed_images(model: CLIPModel, processor: CLIPImageProcessor, images: list) -> np.ndarray:
    """Return L2-normalized image embeddings as float64 numpy, computed in batches of 256."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), 256):
            inputs = processor(images=images[start : start + 256], return_tensors="pt")
            features = model.get_image_features(**inputs).pooler_output
            chunks.append(F.normalize(features, dim=-1).double().numpy())
    return np.concatenate(chunks)


def evaluate(model_dir: Path, heldout_size: int, threads: int) -> dict:
    """Load a saved checkpoint with `from_pretrained` and measure it on held-out scenes.

    Raw scores are cosines of L2-normalized embeddings. Standardized scores first
    subtract each modality's mean over the held-out positive pairs and L2-normalize again.

    The one-attribute test changes each of the six attributes of every held-out scene in
    turn, captions the changed scene with the same template and synonyms, and counts how
    often the correct caption scores higher. The graded test captions every scene with
    0, 1, 2 and 3 wrong attributes and counts the correctly ordered caption pairs.
    """
    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(model_dir).eval()
    tokenizer = CLIPTokenizer.from_pretrained(model_dir)
    processor = CLIPImageProcessor.from_pretrained(model_dir)
    split = scenes.make_split("heldout", heldout_size, seed=HELDOUT_SEED)

    one_wrong_captions: dict[str, list[str]] = {name: [] for name in scenes.ATTRIBUTES}
    graded_captions: list[list[str]] = [[] for _ in range(3)]
    for index, scene in enumerate(split.scenes):
        rng = np.random.default_rng([EVAL_CODE, index])
        for name in scenes.ATTRIBUTES:
            wrong = scenes.corrupt(scene, 1, rng, attributes=(name,))
            one_wrong_captions[name].append(scenes.caption(wrong, np.random.default_rng(split.caption_seeds[index])))
        for n_wrong in (1, 2, 3):
            wrong = scenes.corrupt(scene, n_wrong, rng)
            graded_captions[n_wrong - 1].append(
                scenes.caption(wrong, np.random.default_rng(split.caption_seeds[index]))
            )

    image_embeds = embed_images(model, processor, split.images)
    text_embeds = embed_texts(model, tokenizer, split.captions)
    one_wrong_embeds = {name: embed_texts(model, tokenizer, texts) for name, texts in one_wrong_captions.items()}
    graded_embeds = [embed_texts(model, tokenizer, texts) for texts in graded_captions]

    image_mean, text_mean = image_embeds.mean(axis=0), text_embeds.mean(axis=0)
    spaces = {
        "raw": lambda images, texts: (images, texts),
        "standardized": lambda images, texts: (standardize(images, image_mean), standardize(texts, text_mean)),
    }
    results: dict = {
        "heldout_pairs": heldout_size,
        "heldout_seed": HELDOUT_SEED,
        "chance_r1": 1.0 / heldout_size,
        "logit_scale": float(model.logit_scale.item()),
    }
    for space, transform in spaces.items():
        images, texts = transform(image_embeds, text_embeds)
        positive_scores = np.sum(images * texts, axis=1)
        by_attribute = {}
        for name, embeds in one_wrong_embeds.items():
            _, wrong_texts = transform(image_embeds, embeds)
            by_attribute[name] = float(np.mean(positive_scores > np.sum(images * wrong_texts, axis=1)))
        graded_scores = [positive_scores]
        for embeds in graded_embeds:
            _, wrong_texts = transform(image_embeds, embeds)
            graded_scores.append(np.sum(images * wrong_texts, axis=1))
        ordered_pairs = [
            np.mean(graded_scores[better] > graded_scores[worse])
            for better in range(4)
            for worse in range(better + 1, 4)
        ]
        r1_image_to_text, r1_text_to_image = recall_at_1(images, texts)
        results[space] = {
            "r1_image_to_text": r1_image_to_text,
            "r1_text_to_image": r1_text_to_image,
            "centroid_distance": centroid_distance(images, texts),
            "mean_positive_cosine": float(positive_scores.mean()),
            "one_attribute_accuracy": float(np.mean(list(by_attribute.values()))),
            "one_attribute_accuracy_by_attribute": by_attribute,
            "graded_pair_accuracy": float(np.mean(ordered_pairs)),
        }
    return results


def print_metrics(metrics: dict) -> None:
    print(f"held-out pairs {metrics['heldout_pairs']}, chance R@1 {metrics['chance_r1']:.4f}")
    for space in ("raw", "standardized"):
        values = metrics[space]
        print(
            f"{space:>12}: R@1 i->t {values['r1_image_to_text']:.3f}  t->i {values['r1_text_to_image']:.3f}  "
            f"centroid distance {values['centroid_distance']:.4f}  "
            f"one-attribute {values['one_attribute_accuracy']:.3f}  graded pairs {values['graded_pair_accuracy']:.3f}"
        )
        per_attribute = ", ".join(f"{k} {v:.3f}" for k, v in values["one_attribute_accuracy_by_attribute"].items())
        print(f"{'':>12}  one-attribute by attribute: {per_attribute}")


def checkpoint_bytes(model_dir: Path) -> int:
    return sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.evaluate_only is not None:
        seed_everything(args.seed, args.threads)
        metrics = evaluate(args.evaluate_only, args.heldout_size, args.threads)
        print_metrics(metrics)
        print(json.dumps(metrics, indent=2))
        return

    training = train(args)
    metrics = evaluate(args.out, args.heldout_size, args.threads)
    expected_scale = math.log(1.0 / args.temperature)
    if abs(metrics["logit_scale"] - expected_scale) > 1e-6:
        raise RuntimeError(f"saved logit_scale {metrics['logit_scale']} differs from log(1 / T) = {expected_scale}")
    metrics["checkpoint_bytes"] = checkpoint_bytes(args.out)
    metrics["training"] = training
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print_metrics(metrics)
    print(f"checkpoint {metrics['checkpoint_bytes'] / 1e6:.2f} MB, metrics written to {args.metrics}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
