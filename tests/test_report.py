"""The `i0tscore report` command: a real scores file in, one self-contained HTML page out."""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES

HOSTILE_CAPTION = 'a <script>alert("x")</script> & "quoted" caption'
HOSTILE_IMAGE = "odd <name> & 'quote'.png"


class PageParser(HTMLParser):
    """Collect tags, attributes and text of a page, with the <h2> section each element is in."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str], str]] = []
        self.text: list[str] = []
        self.section = ""
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs), self.section))
        if tag == "h2":
            self._in_h2 = True
            self.section = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.section += data

    def images(self, css_class: str, section_start: str = "") -> list[dict[str, str]]:
        return [
            attrs
            for tag, attrs, section in self.tags
            if tag == "img" and attrs.get("class") == css_class and section.startswith(section_start)
        ]


def run_command(add_parser, run, argv: list[str], cwd: Path) -> int:
    """Parse ARGV with one command's own parser and run it in ``cwd``."""
    parser = argparse.ArgumentParser(prog="i0tscore")
    add_parser(parser.add_subparsers(dest="command", required=True))
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        return run(parser.parse_args(argv))
    finally:
        os.chdir(saved)


@pytest.fixture(scope="module")
def model_args(tiny_clip, tiny_stats) -> list[str]:
    return ["--model", str(tiny_clip), "--stats", str(tiny_stats), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, model_args) -> Path:
    """A scores file from `i0tscore score --compare` over the example photos, one caption hostile, one file name odd."""
    from i0tscore.cli import main

    folder = tmp_path_factory.mktemp("scored")
    (folder / "images").mkdir()
    lines = []
    captions = json.loads((EXAMPLES / "captions.json").read_text(encoding="utf-8"))
    for n, (image_id, caption) in enumerate(sorted(captions.items())):
        source = next((EXAMPLES / "images").glob(f"{image_id}.*"))
        name = HOSTILE_IMAGE if image_id == "cat" else source.name
        shutil.copyfile(source, folder / "images" / name)
        lines.append(json.dumps({"id": image_id, "image": name, "caption": HOSTILE_CAPTION if n == 0 else caption}))
    (folder / "candidates.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    saved = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            code = main(["score", "candidates.jsonl", "--images", "images", "--compare", "--out", "scores.json", *model_args])
    finally:
        os.chdir(saved)
    assert code == 0, stderr.getvalue()
    return folder / "scores.json"


@pytest.fixture(scope="module")
def report(scored, model_args) -> Path:
    from i0tscore.report import add_report_parser, run_report

    out = scored.parent / "out" / "report.html"
    code = run_command(add_report_parser, run_report, ["report", str(scored), "--out", str(out), "--extremes", "3", *model_args], scored.parent)
    assert code == 0
    return out


@pytest.fixture(scope="module")
def page(report) -> PageParser:
    parser = PageParser()
    parser.feed(report.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture(scope="module")
def scores(scored) -> dict:
    return json.loads(scored.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- content


def test_has_summary_and_signature(page, scores):
    text = " ".join(page.text)

    assert "Summary" in text
    assert scores["summary"]["signature"] in text
    assert f"{scores['summary']['mean_i0t_s']:.4f}" in text
    assert "mean I0T-S, mismatched" in text


def test_has_distribution_plots(page):
    plots = page.images("plot")

    assert len(plots) >= 3
    for attrs in plots:
        assert attrs["src"].startswith("data:image/png;base64,")
    alts = " ".join(attrs.get("alt", "") for attrs in plots)
    assert "histograms" in alts
    assert "CLIP-S against I0T-S" in alts


def test_plots_decode_as_png(page):
    import base64

    for attrs in page.images("plot"):
        png = base64.b64decode(attrs["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            assert image.width >= 300


def test_extremes_have_thumbnails(page, scores):
    ranked = [item["id"] for item in sorted(scores["items"], key=lambda item: item["i0t_s"])]
    lowest = page.images("thumbnail", "Lowest")
    highest = page.images("thumbnail", "Highest")

    assert [attrs["alt"] for attrs in lowest] == ranked[:3]
    assert [attrs["alt"] for attrs in highest] == ranked[::-1][:3]
    for attrs in lowest + highest:
        assert attrs["src"].startswith("data:image/jpeg;base64,")


def test_contribution_table_per_item(page, scores):
    tables_in_all_items = [
        attrs for tag, attrs, section in page.tags if tag == "table" and attrs.get("class") == "contributions" and section.startswith("All items")
    ]
    rows = sum(1 for tag, _, section in page.tags if tag == "tr" and section.startswith("All items"))

    assert len(tables_in_all_items) == len(scores["items"])
    # Each table has a header row and k = 5 dimension rows.
    assert rows == 6 * len(scores["items"])


def test_only_data_uris(page, report):
    raw = report.read_text(encoding="utf-8")
    references = [(tag, name, value) for tag, attrs, _ in page.tags for name, value in attrs.items() if name in ("src", "href", "srcset", "action")]

    assert references, "expected <img src> attributes"
    for tag, name, value in references:
        assert value.startswith("data:"), f"<{tag} {name}={value[:80]!r}> is not a data: URI"
    assert not [tag for tag, _, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    assert "http:" not in raw
    assert "https:" not in raw
    assert "url(" not in raw
    assert "@import" not in raw


def test_captions_and_paths_escaped(page, report):
    raw = report.read_text(encoding="utf-8")
    text = "".join(page.text)

    assert "<script>" not in raw
    assert html.escape(HOSTILE_CAPTION) in raw
    assert HOSTILE_CAPTION in text
    assert HOSTILE_IMAGE in text
    assert "<name>" not in raw


def test_written_atomically(report):
    assert not list(report.parent.glob(".*.tmp"))


# ---------------------------------------------------------------------- errors and mismatched pairs


def test_signature_mismatch_rejected(scored, model_args, tmp_path):
    from i0tscore.report import add_report_parser, run_report

    out = tmp_path / "report.html"
    with pytest.raises(ValueError, match="signature"):
        run_command(add_report_parser, run_report, ["report", str(scored), "--out", str(out), "--preset", "paper", *model_args], scored.parent)
    assert not out.exists()


def test_csv_scores_file_rejected(tmp_path, model_args):
    from i0tscore.report import add_report_parser, run_report

    scores = tmp_path / "scores.csv"
    scores.write_text("id,image,caption,i0t_s\n1,a.png,a cat,0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="i0tscore score --out scores.json"):
        run_command(add_report_parser, run_report, ["report", str(scores), "--out", str(tmp_path / "r.html"), *model_args], tmp_path)


def test_report_without_matplotlib(scored, model_args, tmp_path, monkeypatch):
    from i0tscore.plots import MissingExtraError
    from i0tscore.report import add_report_parser, run_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'i0tscore\[plot\]'"):
        run_command(add_report_parser, run_report, ["report", str(scored), "--out", str(tmp_path / "r.html"), *model_args], scored.parent)


def test_derangement_moves_every_caption():
    from i0tscore.report import derangement

    images = [f"{n}.png" for n in range(50)]
    captions = [f"caption {n}" for n in range(50)]
    order = derangement(images, captions, seed=3)

    assert sorted(order) == list(range(50))
    assert (order != np.arange(50)).all()
    assert list(derangement(images, captions, seed=3)) == list(order)
    assert list(derangement(images, captions, seed=4)) != list(order)


def test_derangement_avoids_shared_images_and_captions():
    from i0tscore.report import derangement

    # Items 0 and 1 share an image, items 2 and 3 share a caption.
    images = ["a.png", "a.png", "b.png", "c.png", "d.png"]
    captions = ["one", "two", "three", "three", "four"]
    for seed in range(20):
        order = derangement(images, captions, seed=seed)
        for n, m in enumerate(order):
            assert images[m] != images[n]
            assert captions[m] != captions[n]


def test_derangement_impossible_sets():
    from i0tscore.report import derangement

    assert derangement(["a.png"], ["one"], seed=0) is None
    assert derangement(["a.png", "a.png"], ["one", "two"], seed=0) is None


def test_mismatched_scores_match_numpy(scored, tiny_clip, tiny_stats):
    from i0tscore import I0TScore
    from i0tscore.report import score_mismatched

    scorer = I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False)
    matched = scorer.score_embeddings(np.eye(4, 32) + 0.1, np.roll(np.eye(4, 32), 1, axis=1) + 0.2)
    order = np.array([1, 2, 3, 0])
    mismatched = score_mismatched(scorer, matched, order)

    x = matched.image_embeds.numpy()
    y = matched.text_embeds.numpy()[order]
    x_std = (x - matched.image_mean.numpy()) / np.linalg.norm(x - matched.image_mean.numpy(), axis=1, keepdims=True)
    y_std = (y - matched.text_mean.numpy()) / np.linalg.norm(y - matched.text_mean.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(mismatched.i0t_s, (x_std * y_std).sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(mismatched.clip_s, 2.5 * np.maximum((x * y).sum(axis=1), 0.0), atol=1e-12)


# ---------------------------------------------------------------------- browser

# Chromium contacts Google services (network time, component updates, accounts)
# at start-up even with --disable-background-networking. The resolver rule makes
# every host name unresolvable inside the browser, so those requests never leave
# the machine.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]

# Hosts of Chromium's own start-up requests, which the page does not cause.
CHROMIUM_SERVICE_HOSTS = ("google.com", "googleapis.com", "gstatic.com")


def _render_in_chromium(report: Path, tmp_path: Path) -> tuple[Path, str]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium not found; install Debian's chromium package: apt-get update && apt-get install -y chromium")
    screenshot = tmp_path / "screenshot.png"
    command = [
        executable,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1200,2400",
        # Verbosity 1 logs every file the page loads (FileURLLoader) and every network request.
        "--enable-logging=stderr",
        "--v=1",
        report.resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return screenshot, completed.stderr


def _page_requests(log: str, report: Path) -> list[str]:
    """URLs that the page itself made Chromium fetch, besides the page."""
    files = re.findall(r"FileURLLoader::Start: (\S+)", log)
    network = re.findall(r"NotifyBeforeURLRequest: (\S+)", log)
    own = [url for url in network if re.match(r"https?://([^/?]+\.)?(%s)([/?:]|$)" % "|".join(map(re.escape, CHROMIUM_SERVICE_HOSTS)), url)]
    return [url for url in files if url != report.resolve().as_uri()] + [url for url in network if url not in own]


def test_renders_in_chromium(report, tmp_path):
    screenshot, log = _render_in_chromium(report, tmp_path)

    assert screenshot.is_file(), log[-3000:]
    assert report.resolve().as_uri() in re.findall(r"FileURLLoader::Start: (\S+)", log), "the log shows no page load"
    assert _page_requests(log, report) == []
    assert "Failed to load resource" not in log
    assert "ERR_FILE_NOT_FOUND" not in log

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (2400, 1200)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: the page looks blank"
    # matplotlib's tab:blue (31, 119, 180) fills the scatter points and positive bars.
    blue = (np.abs(pixels.astype(int) - (31, 119, 180)).sum(axis=2) < 30).sum()
    assert blue > 500, f"only {blue} tab:blue pixels: the plots did not render"
    # tab:orange (255, 127, 14) at alpha 0.55 over white appears only in the mismatched histogram bars.
    orange = (np.abs(pixels.astype(int) - (255, 185, 123)).sum(axis=2) < 30).sum()
    assert orange > 200, f"only {orange} mismatched-histogram pixels: the distribution plots did not render"
