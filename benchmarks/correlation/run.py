"""Compare CLIP-S, RefCLIP-S, I0T-S and Ref-I0T-S with human judgments on one benchmark.

Usage (see README.md in this folder for the data):
    python benchmarks/correlation/run.py flickr8k-expert --json flickr8k/flickr8k.json --image-root flickr8k \\
        --model openai/clip-vit-base-patch32 --stats corpus --out expert.json --markdown expert.md

Each image and text is encoded once. I0T-S and Ref-I0T-S are reported under
both presets (``default``: x'·y', ``paper``: 2·max(x'·y', 0)). The JSON output
records the scorer signatures, the settings and the library versions. The
markdown table puts the published CLIP-S and RefCLIP-S numbers beside the
measured ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

if __package__ in (None, ""):
    # Run as a script: make the `correlation` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from correlation import loaders  # noqa: E402
from correlation.metrics import (  # noqa: E402
    correlations,
    foil_references,
    pairwise_accuracy,
    pascal_accuracy,
    pascal_human_prefers_a,
    sample_references,
)
from correlation.report import accuracy_table, correlation_table, environment, write_json  # noqa: E402
from correlation.scoring import METRICS, BenchmarkScorer  # noqa: E402
from i0tscore.fileio import atomic_write  # noqa: E402

# Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
# EMNLP 2021, OpenAI ViT-B/32, all values × 100. Correlations: Flickr8k-Expert τ-c,
# Flickr8k-CF τ-b, Composite τ-c. Pascal-50S: accuracy with 5 sampled references.
# FOIL: accuracy with 1 and 4 references.
PUBLISHED_CORRELATION = {
    "flickr8k-expert": {"clip_s": 51.2, "ref_clip_s": 53.0},
    "flickr8k-cf": {"clip_s": 34.4, "ref_clip_s": 36.4},
    "composite": {"clip_s": 53.8, "ref_clip_s": 55.4},
}
PUBLISHED_PASCAL = {
    "clip_s": {"HC": 56.5, "HI": 99.3, "HM": 96.4, "MM": 70.4, "mean": 80.7},
    "ref_clip_s": {"HC": 64.5, "HI": 99.6, "HM": 95.4, "MM": 72.8, "mean": 83.1},
}
PUBLISHED_FOIL = {
    "clip_s": {"1-ref": 87.2, "4-ref": 87.2},
    "ref_clip_s": {"1-ref": 91.0, "4-ref": 92.6},
}
PRIMARY_MEASURE = {"flickr8k-expert": "tau_c", "flickr8k-cf": "tau_b", "composite": "tau_c"}
"""The correlation each dataset is reported with in the captioning-metric literature."""


# ------------------------------------------------------------------ evaluation


def evaluate_rated(dataset: loaders.RatedDataset, scorer: BenchmarkScorer) -> dict[str, Any]:
    """Correlate every metric with the human ratings of a correlation benchmark."""
    rows = dataset.rows
    keys = [row.image for row in rows]
    captions = [row.candidate for row in rows]
    references = [list(row.references) for row in rows]
    distinct_images = list(dict.fromkeys(keys))
    scorer.encode(distinct_images, captions + [ref for refs in references for ref in refs])
    scorer.fix_statistics(keys, captions)
    scores = scorer.score(keys, captions, references)
    ratings = [row.rating for row in rows]
    return {
        "rows": len(rows),
        "dropped_candidate_in_references": dataset.dropped_overlap,
        "dropped_other": dataset.dropped_other,
        "results": {metric: correlations(scores[metric], ratings) for metric in METRICS},
    }


def evaluate_pascal(pairs: Sequence[loaders.PascalPair], scorer: BenchmarkScorer, references: int, draws: int, seed: int) -> dict[str, Any]:
    """Pascal-50S accuracy per category, averaged over seeded draws of references.

    Draw d uses ``np.random.default_rng([seed, d])`` to sample ``references``
    of the 48 references per pair and to break tied human votes.
    """
    keys = [pair.image for pair in pairs] * 2
    captions = [pair.caption_a for pair in pairs] + [pair.caption_b for pair in pairs]
    sampled, preferences = [], []
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        sampled.append(sample_references([pair.references for pair in pairs], references, rng))
        preferences.append(pascal_human_prefers_a(pairs, rng))
    texts = captions + [ref for refs_of_draw in sampled for refs in refs_of_draw for ref in refs]
    scorer.encode(list(dict.fromkeys(keys)), texts)
    scorer.fix_statistics(keys, captions)

    per_draw: dict[str, list[dict[str, float]]] = {metric: [] for metric in METRICS}
    count = len(pairs)
    for refs, prefers_a in zip(sampled, preferences):
        scores = scorer.score(keys, captions, refs + refs)
        for metric in METRICS:
            per_draw[metric].append(pascal_accuracy(pairs, scores[metric][:count], scores[metric][count:], prefers_a))
    results = {metric: {name: float(np.mean([draw[name] for draw in values])) for name in values[0]} for metric, values in per_draw.items()}
    return {"pairs": count, "references": references, "draws": draws, "seed": seed, "results": results, "per_draw": per_draw}


def evaluate_foil(pairs: Sequence[loaders.FoilPair], scorer: BenchmarkScorer, unpaired: int) -> dict[str, Any]:
    """FOIL accuracy (true caption scored above its foil) with 1 and with 4 references."""
    usable = [pair for pair in pairs if pair.references]
    keys = [pair.image for pair in usable] * 2
    captions = [pair.original for pair in usable] + [pair.foil for pair in usable]
    by_count = {count: foil_references(usable, count) for count in (1, 4)}
    scorer.encode(list(dict.fromkeys(keys)), captions + [ref for refs in by_count[4] for ref in refs])
    scorer.fix_statistics(keys, captions)

    results: dict[str, dict[str, float]] = {metric: {} for metric in METRICS}
    count = len(usable)
    for references, refs in by_count.items():
        scores = scorer.score(keys, captions, refs + refs)
        for metric in METRICS:
            results[metric][f"{references}-ref"] = pairwise_accuracy(scores[metric][:count], scores[metric][count:])
    return {
        "pairs": count,
        "pairs_without_references": len(pairs) - count,
        "pairs_with_fewer_than_4_references": sum(len(pair.references) < 4 for pair in usable),
        "foils_without_true_caption": unpaired,
        "reference_order": "COCO annotation id; the first 1 or 4 references other than the true caption",
        "results": results,
    }


# ------------------------------------------------------------------ command line


def load_rated(args: argparse.Namespace) -> loaders.RatedDataset:
    """Load a correlation benchmark from the files named on the command line."""
    if args.dataset == "composite":
        return loaders.load_composite_csv(args.csv, args.image_root, columns=args.columns, image_suffix=args.image_suffix)
    if args.json is not None:
        return loaders.load_flickr8k_json(args.json, args.image_root, name=args.dataset)
    if args.annotations is None or args.tokens is None:
        raise SystemExit(f"{args.dataset}: pass --json FILE, or --annotations FILE with --tokens Flickr8k.token.txt")
    load: Callable = loaders.load_flickr8k_expert_txt if args.dataset == "flickr8k-expert" else loaders.load_flickr8k_crowdflower_txt
    return load(args.annotations, args.tokens, args.image_root)


def evaluate(args: argparse.Namespace, scorer: BenchmarkScorer) -> tuple[dict[str, Any], str]:
    """Run the benchmark named by ``args.dataset``; return the report and its markdown table."""
    if args.dataset in PRIMARY_MEASURE:
        dataset = load_rated(args)
        if args.limit:
            dataset = loaders.RatedDataset(dataset.name, dataset.rows[: args.limit], dataset.sources, dataset.dropped_overlap, dataset.dropped_other)
        report = evaluate_rated(dataset, scorer)
        report["sources"] = dataset.sources
        return report, correlation_table(report["results"], PRIMARY_MEASURE[args.dataset], _primary_published(args.dataset))
    if args.dataset == "pascal50s":
        pairs = loaders.load_pascal50s(args.pair_mat, args.consensus_mat, args.image_root)[: args.limit or None]
        report = evaluate_pascal(pairs, scorer, args.references, args.draws, args.seed)
        return report, accuracy_table(report["results"], ["HC", "HI", "HM", "MM", "mean"], PUBLISHED_PASCAL)
    pairs, unpaired = loaders.load_foil(args.foil_json, args.coco_captions, args.image_root)
    report = evaluate_foil(pairs[: args.limit or None], scorer, unpaired)
    return report, accuracy_table(report["results"], ["1-ref", "4-ref"], PUBLISHED_FOIL)


def _primary_published(dataset: str) -> dict[str, float]:
    return PUBLISHED_CORRELATION.get(dataset, {})


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["flickr8k-expert", "flickr8k-cf", "composite", "pascal50s", "foil"])
    parser.add_argument("--model", default="openai/clip-vit-base-patch32", help="hub id or local CLIP folder")
    parser.add_argument("--stats", default="auto", help="statistics file or shipped name, 'corpus' (means of the benchmark itself), or 'auto' (shipped, else corpus)")
    parser.add_argument("--device", default=None, help="cpu, cuda, or unset for the first available")
    parser.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass")
    parser.add_argument("--image-root", type=Path, default=None, help="folder that image names in the files are relative to")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N rows or pairs (0: all), for a quick check")
    parser.add_argument("--out", type=Path, default=None, help="JSON report file (default: standard output)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the markdown table to this file")
    flickr = parser.add_argument_group("Flickr8k")
    flickr.add_argument("--json", type=Path, help="flickr8k.json or crowdflower_flickr8k.json (CLIPScore repository layout)")
    flickr.add_argument("--annotations", type=Path, help="ExpertAnnotations.txt or CrowdFlowerAnnotations.txt")
    flickr.add_argument("--tokens", type=Path, help="Flickr8k.token.txt")
    composite = parser.add_argument_group("Composite")
    composite.add_argument("--csv", type=Path, help="CSV with image id, candidate, references and score columns")
    composite.add_argument("--columns", nargs=4, default=["image_id", "candidate", "references", "score"], metavar=("IMAGE", "CANDIDATE", "REFERENCES", "SCORE"), help="CSV header names")
    composite.add_argument("--image-suffix", default="", help="appended to the image id to form the file name, e.g. .jpg")
    pascal = parser.add_argument_group("Pascal-50S")
    pascal.add_argument("--pair-mat", type=Path, help="pair_pascal.mat")
    pascal.add_argument("--consensus-mat", type=Path, help="consensus_pascal.mat")
    pascal.add_argument("--references", type=int, default=5, help="references sampled per pair (default: 5)")
    pascal.add_argument("--draws", type=int, default=5, help="seeded draws of references to average over (default: 5)")
    pascal.add_argument("--seed", type=int, default=0, help="seed of the reference draws and human tie-breaks (default: 0)")
    foil = parser.add_argument_group("FOIL")
    foil.add_argument("--foil-json", type=Path, help="foilv1.0_test_2017.json")
    foil.add_argument("--coco-captions", type=Path, help="captions_val2014.json")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    scorer = BenchmarkScorer(args.model, stats=args.stats, device=args.device, batch_size=args.batch_size)
    report, table = evaluate(args, scorer)
    report = {
        "dataset": args.dataset,
        "model": args.model,
        "statistics": scorer.stats_mode,
        "signatures": scorer.signatures(),
        "environment": environment(),
        **report,
    }
    header = f"{args.dataset}, model {args.model}, statistics {scorer.stats_mode}\n\n"
    if args.markdown is not None:
        atomic_write(args.markdown, header + table)
    print(header + table, file=sys.stderr)
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
