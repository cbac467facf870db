"""The ``i0tscore`` command line.

Exit codes: 0 success, 2 bad usage or input (including a missing file, model or
statistics), 1 any other failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from i0tscore._version import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger("i0tscore")


class UsageError(ValueError):
    """Bad command-line usage that argparse cannot detect by itself."""


# ---------------------------------------------------------------------- parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="openai/clip-vit-base-patch32", help="hub id or local folder of a CLIP checkpoint (default: %(default)s)")
    group.add_argument("--revision", default=None, help="hub branch, tag or commit of the model")
    group.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype; float16 needs a GPU (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=64, help="images or captions per forward pass (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i0tscore",
        description="I0T-S: CLIP image-caption scores with the modality gap removed, beside CLIP-S.",
    )
    parser.add_argument("--version", action="version", version=f"i0tscore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser("score", help="score candidate captions against their images")
    score.add_argument("candidates", help="candidates file: CLIPScore JSON {id: caption}, COCO results JSON, or JSONL {image, caption, references}")
    score.add_argument("--images", help="image folder (image ids are file stems)")
    score.add_argument("--annotations", help="COCO annotations file mapping image ids to file names")
    score.add_argument("--references", help="references: JSON {id: [captions]} or COCO annotations; adds RefCLIP-S and Ref-I0T-S")
    score.add_argument("--stats", default=None, help="statistics file, shipped name, or 'corpus' (default: the statistics shipped for the model)")
    score.add_argument("--layers", default=None, help="I0T_async normalization layers (from 'i0tscore train-async') to use instead of statistics")
    score.add_argument("--allow-model-mismatch", action="store_true", help="use statistics or layers built for another model")
    score.add_argument("--preset", default="default", choices=["default", "paper"], help="default: I0T-S = x'.y'; paper: 2 * max(x'.y', 0) (default: %(default)s)")
    score.add_argument("--prefix", default=None, help="caption prefix (default: the statistics' prefix, 'A photo depicts ')")
    score.add_argument("--out", default="-", help="output file, .json or .csv; '-' for stdout (default)")
    score.add_argument("--format", choices=["json", "csv"], default=None, help="output format (default: from --out's suffix, else json)")
    score.add_argument("--compare", action="store_true", help="add CLIP-S columns to the output and print both scores side by side")
    score.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="on an unreadable image: stop with exit code 2 (fail) or write the item with an error (skip)")
    score.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial.jsonl instead of starting over")
    score.add_argument("--cache", default=None, metavar="DIR", help="keep image embeddings in DIR and reuse them in later runs (keyed by image content, model and preprocessing)")
    score.add_argument("--chunk-size", type=int, default=1024, help="items scored between two saves of finished work to OUT.partial.jsonl (default: %(default)s)")
    _add_model_options(score)

    stats = commands.add_parser("stats", help="build, merge, list and show modality statistics")
    stats_commands = stats.add_subparsers(dest="stats_command", required=True, metavar="ACTION")

    build = stats_commands.add_parser("build", help="compute image and text means over a corpus")
    build.add_argument("--data", required=True, help="corpus: COCO captions annotations .json, .jsonl or .csv with image and caption")
    build.add_argument("--images", default=None, help="folder that relative image paths are resolved against (default: the corpus file's folder)")
    build.add_argument("--out", required=True, help="statistics file to write (.json)")
    build.add_argument("--corpus", default=None, help="corpus name stored in the file (default: the --data file name)")
    build.add_argument("--prefix", default="A photo depicts ", help="caption prefix; use the prefix you will score with (default: %(default)r)")
    build.add_argument("--limit", type=int, default=None, help="use a seeded random subset of N pairs")
    build.add_argument("--seed", type=int, default=0, help="seed of --limit (default: %(default)s)")
    build.add_argument("--shard", default=None, help="K/N: take every N-th image starting at the K-th (0-based); merge the N files with 'stats merge'")
    build.add_argument("--resume", action="store_true", help="continue an interrupted build from OUT.partial.json")
    build.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="on an unreadable image: stop (fail) or leave it out (skip)")
    _add_model_options(build)

    merge = stats_commands.add_parser("merge", help="merge statistics built on shards of a corpus")
    merge.add_argument("files", nargs="+", help="statistics files to merge")
    merge.add_argument("--out", required=True, help="merged statistics file to write")

    stats_commands.add_parser("list", help="list the statistics shipped with the package")
    show = stats_commands.add_parser("show", help="show a statistics file or a shipped entry")
    show.add_argument("name", help="shipped name or model id, or a file path")

    gap = commands.add_parser("gap", help="measure the modality gap before and after standardization")
    source = gap.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", help=".npz or .safetensors with arrays image and text (N x D), or .npy of shape (2, N, D)")
    source.add_argument("--data", help="corpus to encode with --model: COCO captions .json, .jsonl or .csv")
    gap.add_argument("--images", default=None, help="folder that relative image paths in --data are resolved against")
    gap.add_argument("--limit", type=int, default=None, help="use a seeded random subset of N pairs of --data")
    gap.add_argument("--stats", default=None, help="take the means from this statistics file (out-of-sample) instead of the set itself")
    gap.add_argument("--split", action="store_true", help="take the means from one random half and measure the other half")
    gap.add_argument("--seed", type=int, default=0, help="seed of the split, the separability split and --limit (default: %(default)s)")
    gap.add_argument("--prefix", default="A photo depicts ", help="caption prefix when encoding --data (default: %(default)r)")
    gap.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: %(default)s)")
    gap.add_argument("--out", default="-", help="output file; '-' for stdout (default)")
    gap.add_argument("--plot", default=None, help="write a PCA scatter of both modalities, before and after, to this PNG")
    _add_model_options(gap)

    from i0tscore.asyncnorm_train import add_train_async_parser
    from i0tscore.explain import add_explain_parser
    from i0tscore.report import add_report_parser

    add_explain_parser(commands)
    add_report_parser(commands)
    add_train_async_parser(commands)
    return parser


# ---------------------------------------------------------------------- score


def run_score(args: argparse.Namespace) -> int:
    from i0tscore.images import ImageLoadError
    from i0tscore.inputs import read_candidates
    from i0tscore.runner import score_items, summarize
    from i0tscore.scorer import I0TScore

    items = read_candidates(args.candidates, images=args.images, annotations=args.annotations, references=args.references)
    has_refs = [item.references is not None for item in items]
    if any(has_refs) and not all(has_refs):
        missing = next(item.id for item in items if item.references is None)
        raise UsageError(f"{args.candidates}: item {missing!r} has no references while others do; give references for every item or none.")

    scorer = I0TScore(
        args.model,
        stats=args.stats,
        layers=args.layers,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        preset=args.preset,
        prefix=args.prefix,
        batch_size=args.batch_size,
        progress=False if args.no_progress else None,
        allow_model_mismatch=args.allow_model_mismatch,
        cache=args.cache,
    )
    out_is_file = args.out != "-"
    partial = Path(args.out + ".partial.jsonl") if out_is_file else None
    if partial is not None and partial.exists() and not args.resume:
        raise UsageError(f"{partial} contains the scores of an interrupted run; pass --resume to continue it, or delete it to start over.")
    if args.resume and partial is None:
        raise UsageError("--resume needs --out FILE: an interrupted run keeps its finished items next to that file.")

    try:
        records = score_items(
            scorer,
            items,
            partial=None if scorer.uses_corpus_means else partial,
            resume=args.resume,
            on_error="skip" if args.on_error == "skip" else "raise",
            chunk_size=args.chunk_size,
        )
    except ImageLoadError as err:
        raise ImageLoadError(f"{err} Use --on-error skip to score the other items.") from err

    summary = summarize(records)
    for record in records:
        record.pop("signature", None)
        if not args.compare:
            record.pop("clip_s", None)
            record.pop("ref_clip_s", None)
    fmt = args.format or ("csv" if str(args.out).lower().endswith(".csv") else "json")
    text = _format_csv(records) if fmt == "csv" else json.dumps({"summary": summary, "items": records}, indent=1, ensure_ascii=False) + "\n"
    _write_output(args.out, text)
    if partial is not None and partial.exists():
        partial.unlink()

    if args.compare:
        _print_comparison(records)
    _print_summary(summary)
    return EXIT_OK


def _format_csv(records: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for record in records:
        columns.extend(key for key in record if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _write_output(out: str, text: str) -> None:
    from i0tscore.fileio import atomic_write

    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write(out, text)


def _print_comparison(records: list[dict[str, Any]]) -> None:
    width = max([len(str(r["id"])) for r in records] + [2])
    print(f"{'id':<{width}}  {'I0T-S':>7}  {'CLIP-S':>7}  caption", file=sys.stderr)
    for record in records:
        if "error" in record:
            print(f"{record['id']:<{width}}  {'error':>7}  {'':>7}  {record['error']}", file=sys.stderr)
            continue
        print(f"{record['id']:<{width}}  {record['i0t_s']:7.4f}  {record['clip_s']:7.4f}  {record['caption'][:60]}", file=sys.stderr)


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"i0tscore: {summary['scored']} of {summary['items']} items scored, {summary['skipped']} skipped, "
        f"{summary['truncated']} truncated\n"
        f"  mean I0T-S  {summary['mean_i0t_s']:.4f}\n"
        f"  mean CLIP-S {summary['mean_clip_s']:.4f}\n"
        f"  signature   {summary['signature']}",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------- stats


def run_stats(args: argparse.Namespace) -> int:
    handlers = {"build": _stats_build, "merge": _stats_merge, "list": _stats_list, "show": _stats_show}
    return handlers[args.stats_command](args)


def _parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard {value!r} is invalid; expected K/N, e.g. 0/4.") from None
    if not 0 <= index < count:
        raise UsageError(f"--shard {value!r} is invalid; expected K/N with 0 <= K < N.")
    return index, count


def _stats_build(args: argparse.Namespace) -> int:
    from i0tscore.build import build_statistics, subsample
    from i0tscore.inputs import read_corpus
    from i0tscore.model import load_clip

    shard = _parse_shard(args.shard)
    out = Path(args.out)
    pairs = subsample(read_corpus(args.data, images=args.images), args.limit, args.seed)
    encoder = load_clip(args.model, revision=args.revision, device=args.device, dtype=args.dtype)
    checkpoint = out.with_name(out.name + ".partial.json")
    if checkpoint.exists() and not args.resume:
        raise UsageError(f"{checkpoint} contains the running sums of an interrupted build; pass --resume to continue it, or delete it to start over.")

    extra: dict[str, Any] = {"limit": args.limit, "seed": args.seed if args.limit is not None else None}
    if shard is not None:
        extra["shard"] = f"{shard[0]}/{shard[1]}"
    stats = build_statistics(
        encoder,
        pairs,
        corpus=args.corpus or Path(args.data).name,
        corpus_path=str(args.data),
        prefix=args.prefix,
        batch_size=args.batch_size,
        checkpoint=checkpoint,
        resume=args.resume,
        on_error="skip" if args.on_error == "skip" else "raise",
        progress=False if args.no_progress else None,
        shard=shard,
        extra_provenance=extra,
    )
    stats.save(out)
    print(
        f"i0tscore: wrote {out}: {stats.num_pairs} pairs, {stats.num_images} images, dim {stats.dim}, "
        f"centroid distance {stats.centroid_distance:.4f}, sha256 {stats.checksum[:12]}",
        file=sys.stderr,
    )
    return EXIT_OK


def _stats_merge(args: argparse.Namespace) -> int:
    from i0tscore.build import merge_statistics
    from i0tscore.statistics import Statistics

    merged = merge_statistics([Statistics.load(path) for path in args.files])
    merged.save(args.out)
    print(f"i0tscore: wrote {args.out}: {merged.num_pairs} pairs from {len(args.files)} files, sha256 {merged.checksum[:12]}", file=sys.stderr)
    return EXIT_OK


def _stats_list(args: argparse.Namespace) -> int:
    from i0tscore.statistics import shipped_entries

    entries = shipped_entries()
    if not entries:
        print("No statistics are shipped with this installation.")
        return EXIT_OK
    print(f"{'name':<16} {'model':<36} {'pairs':>8}  {'sha256':<12}  corpus")
    for entry in entries:
        print(f"{entry.name:<16} {entry.model_id:<36} {entry.num_pairs:>8}  {entry.sha256[:12]}  {entry.corpus}")
    return EXIT_OK


def _stats_show(args: argparse.Namespace) -> int:
    from i0tscore.statistics import Statistics, load_shipped

    path = Path(args.name)
    stats = Statistics.load(path) if path.suffix.lower() == ".json" or path.exists() else load_shipped(args.name)
    summary = {
        "source": stats.source,
        "model_id": stats.model.model_id,
        "revision": stats.model.revision,
        "weights_sha256": stats.model.weights_sha256,
        "dim": stats.dim,
        "corpus": stats.corpus,
        "num_pairs": stats.num_pairs,
        "num_images": stats.num_images,
        "num_texts": stats.num_texts,
        "prefix": stats.prefix,
        "normalized": stats.normalized,
        "centroid_distance": round(stats.centroid_distance, 6),
        "sha256": stats.checksum,
        "provenance": stats.provenance,
    }
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return EXIT_OK


# ---------------------------------------------------------------------- gap


def run_gap(args: argparse.Namespace) -> int:
    from i0tscore.gap import load_embeddings, modality_gap
    from i0tscore.statistics import Statistics

    if args.embeddings:
        image_embeds, text_embeds = load_embeddings(args.embeddings)
    else:
        image_embeds, text_embeds = _encode_corpus(args)

    if args.split and args.stats:
        raise UsageError("--split and --stats are exclusive: --split takes the means from half of the set itself.")
    stats = Statistics.load(args.stats) if args.stats else None
    report = modality_gap(image_embeds, text_embeds, stats, split=args.split, seed=args.seed)
    text = json.dumps(report.to_dict(), indent=1) + "\n" if args.format == "json" else report.format_table() + "\n"
    _write_output(args.out, text)

    if args.plot:
        from i0tscore.gap import plot_gap

        plot_gap(image_embeds, text_embeds, stats, out=args.plot, seed=args.seed)
        print(f"i0tscore: wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def _encode_corpus(args: argparse.Namespace):
    from i0tscore.build import subsample
    from i0tscore.inputs import read_corpus
    from i0tscore.scorer import I0TScore

    pairs = subsample(read_corpus(args.data, images=args.images), args.limit, args.seed)
    scorer = I0TScore(args.model, stats="corpus", revision=args.revision, device=args.device, dtype=args.dtype, prefix=args.prefix, batch_size=args.batch_size, progress=False if args.no_progress else None)
    image_embeds = scorer.encode_images([pair.image for pair in pairs])
    text_embeds, _ = scorer.encode_texts([pair.caption for pair in pairs])
    return image_embeds.numpy(), text_embeds.numpy()


# ---------------------------------------------------------------------- main


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"i0tscore: warning: {message}", file=sys.stderr)


def _quiet_transformers() -> None:
    # transformers prints weight-loading bars and backend notices to stderr;
    # the command shows its own progress and summary instead.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="i0tscore: %(levelname)s: %(message)s")

    from i0tscore.explain import run_explain
    from i0tscore.images import ImageLoadError
    from i0tscore.model import ModelLoadError
    from i0tscore.plots import MissingExtraError
    from i0tscore.asyncnorm_train import run_train_async
    from i0tscore.report import run_report
    from i0tscore.statistics import StatisticsError

    commands = {"score": run_score, "stats": run_stats, "gap": run_gap, "explain": run_explain, "report": run_report, "train-async": run_train_async}
    try:
        # catch_warnings restores the caller's filters and showwarning afterwards.
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            _quiet_transformers()
            return commands[args.command](args)
    except (UsageError, ValueError, MissingExtraError, FileNotFoundError, ImageLoadError, StatisticsError, ModelLoadError) as err:
        print(f"i0tscore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("i0tscore: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - the CLI reports every failure with exit code 1
        logger.debug("Unhandled error", exc_info=True)
        print(f"i0tscore: error: {type(err).__name__}: {err} (run with -v for details)", file=sys.stderr)
        if args.verbose:
            raise
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
