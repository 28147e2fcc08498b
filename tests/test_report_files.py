"""The report's files as a reader gets them: no machine paths, whole sentences,
captions beside their figures, readable delta axes, Figure 1 in colour.

Runs are fabricated with tests/test_report.py's helpers (no training).
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ablations.kinds import lr_grid
from reports import build_report
from reports import collect as C
from reports import document as D
from reports import figures as F
from reports.sections import preset_description
from reproduce import runs as R
from reproduce.config import PRESETS, data_identity
from tests.test_report import fig1_curve, make_run, squash

pytestmark = pytest.mark.one_backend

REPO = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:root|home|work|tmp|Users|mnt|opt|var|private)/")


def _pdf_pages(path: Path) -> list:
    from pypdf import PdfReader

    return list(PdfReader(str(path)).pages)


# --------------------------------------------------------------------------------------
# No absolute machine paths
# --------------------------------------------------------------------------------------


def _abs_path_root(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """smoke baseline and no_lrn runs on a local archive given by an absolute path,
    recorded with commands full of absolute paths (as `python -m ablations` records them)."""
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))  # the digest memo stays in tmp_path
    archive = tmp_path / "machine" / "data" / "alexnet-data.tar.xz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"not really an archive, but bytes with a digest")
    root = tmp_path / "runs"
    extra = {"train.epochs": 5, "data.source": str(archive)}
    for label, wrong in (("baseline", (120, 126)), ("no_lrn", (130, 137))):
        for seed in (0, 1):
            path = make_run(root, "smoke", label, seed, top1=wrong[seed], extra=extra)
            cfg = json.loads((path / R.CONFIG).read_text())
            meta = cfg.pop("meta")
            meta["data_id"] = data_identity(str(archive))  # what the trainer records
            meta["command"] = (
                f"python {REPO}/experiments/run.py && python -m ablations run {label} --preset smoke "
                f"--runs {root} --set data.source={archive} train.epochs=5 "
                "--cache /root/.cache/reproduce"
            )
            R.write_config(path, cfg, meta)
    return root, archive


def test_no_machine_paths_in_the_report_files(tmp_path, monkeypatch):
    root, archive = _abs_path_root(tmp_path, monkeypatch)
    rep = build_report(root, tmp_path / "out")  # the default command: absolute --runs and --out
    md = rep.markdown.read_text()
    pdf = squash("".join(p.extract_text() for p in _pdf_pages(rep.pdf)))
    texts = {"report.md": md, "runs.csv": rep.runs_csv.read_text(), "claims.csv": rep.claims_csv.read_text()}
    for name, text in texts.items():
        assert str(tmp_path) not in text, name
        assert "/root/" not in text, name
        assert not MACHINE_PATH.search(text), (name, MACHINE_PATH.search(text))
    assert squash(str(tmp_path)) not in pdf and "/root/" not in pdf and not MACHINE_PATH.search(pdf)
    # The data by file name and content digest, once, in the data line.
    digest = json.loads((next(root.rglob(R.CONFIG))).read_text())["meta"]["data_id"]
    assert digest.startswith("sha256:")
    assert f"Dataset: `alexnet-data.tar.xz` (content digest `{digest}`)" in md
    # Commands: the data by name, a repository path relative, other folders by name.
    assert (
        "python experiments/run.py && python -m ablations run no_lrn --preset smoke --runs runs "
        "--set data.source=alexnet-data.tar.xz train.epochs=5 --cache reproduce"
    ) in md
    assert "python -m reports --runs runs --out out" in md
    assert "Runs root: `runs`" in md


def test_portable_paths():
    repo = Path("/srv/checkout")
    assert C.portable("a --runs /srv/checkout/results --x=/srv/checkout", repo=repo) == "a --runs results --x=."
    assert C.portable("--set data.source=../shared/d/a.tar.xz", ["../shared/d/a.tar.xz"], repo) == (
        "--set data.source=a.tar.xz"
    )
    assert C.portable("data.source=shared/a.tar and shared/a.tar.xz", ["shared/a.tar"], repo) == (
        "data.source=a.tar and shared/a.tar.xz"
    )
    # A relative path out of the folder the command ran in (not a data source): its last name.
    assert C.portable("--data ../d/a.tar.xz --runs ../../x/runs", repo=repo) == "--data a.tar.xz --runs runs"
    # Other absolute and home paths: their last name; sentences, URLs, ratios, TFDS names and
    # relative paths are left alone.
    assert (
        C.portable("under /tmp/x/runs. See ~/y/z, https://a.org/b 3/4 tfds:imagenette/160px-v2 ./c/d", repo=repo)
        == "under runs. See z, https://a.org/b 3/4 tfds:imagenette/160px-v2 ./c/d"
    )


# --------------------------------------------------------------------------------------
# Preset descriptions in whole sentences
# --------------------------------------------------------------------------------------


def test_preset_description_is_whole_sentences(tmp_path, monkeypatch):
    doc = (
        "A preset whose first sentence runs over\n    two lines of its docstring (a, b). A second one.\n\n"
        "    Command: ``make reproduce``."
    )
    monkeypatch.setitem(PRESETS, "smoke", dataclasses.replace(PRESETS["smoke"], doc=doc))
    for s in (0, 1):
        make_run(tmp_path / "runs", "smoke", "baseline", s)
    md = build_report(tmp_path / "runs", tmp_path / "out").markdown.read_text()
    line = next(x for x in md.splitlines() if x.startswith("- Preset: `smoke`"))
    assert line == (
        "- Preset: `smoke` - A preset whose first sentence runs over two lines of its docstring (a, b). A second one."
    )


def test_a_long_description_is_cut_at_a_sentence_end():
    first = "The first sentence, which is kept whole however long it is (x 1.5, e.g. this)."
    doc = first + " " + " ".join(f"Sentence {i} of the paragraph." for i in range(40))
    out = preset_description(doc, limit=120)
    assert out.startswith(first) and out.endswith(".") and len(out) <= 120
    assert doc.startswith(out) and doc[len(out)] == " " and doc[len(out) + 1].isupper()
    assert preset_description(doc, limit=10) == first  # at least the first sentence
    for p in PRESETS.values():  # the real docstrings
        d = preset_description(p.doc)
        assert d[-1] in ".!?", (p.name, d)
        assert " ".join(p.doc.split()).startswith(d), p.name


# --------------------------------------------------------------------------------------
# Captions on the page of their figure
# --------------------------------------------------------------------------------------


def _png(path: Path, w_in: float, h_in: float) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w_in, h_in))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def test_caption_stays_on_the_page_of_its_figure(tmp_path):
    png = _png(tmp_path / "f.png", 6.0, 2.6)
    caption = "CAPTION-START " + "words of a caption that runs over several lines " * 8 + "CAPTION-END"
    for words in range(40, 900, 18):  # the figure lands at every height of the page
        doc = D.Document("layout")
        doc.add(D.Para("filler " * words))
        doc.add(D.Figure(png, "f.png", caption, 6.0, 2.6))
        D.to_pdf(doc, tmp_path / "c.pdf")
        pages = _pdf_pages(tmp_path / "c.pdf")
        with_image = [i for i, p in enumerate(pages) if p.images]
        texts = [squash(p.extract_text()) for p in pages]
        assert (
            with_image
            == [i for i, t in enumerate(texts) if "CAPTION-START" in t]
            == [i for i, t in enumerate(texts) if "CAPTION-END" in t]
        ), words


# --------------------------------------------------------------------------------------
# The delta chart
# --------------------------------------------------------------------------------------


def _ci(est, lo, hi):
    return SimpleNamespace(estimate=est, lo=lo, hi=hi, ok=True)


def _row(name, est, half, claimed=None, metric="top-1"):
    nan = float("nan")
    ci = (
        _ci(est, est - half, est + half) if est is not None else SimpleNamespace(estimate=nan, lo=nan, hi=nan, ok=False)
    )
    return SimpleNamespace(ablation=name, metric=metric, ci=ci, image_ci=None, claimed=claimed)


def _captured(monkeypatch) -> list:
    seen = []

    def save(fig, path):
        seen.append(fig)
        return F.FigureFile(path, *fig.get_size_inches())

    monkeypatch.setattr(F, "save", save)
    return seen


def test_delta_axis_shows_small_effects_and_clips_large_ones(monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    rows = [_row("failed_to_learn", 0.30, 0.05), _row("small", 0.02, 0.03, claimed=0.014)]
    assert F.delta_chart(rows, tmp_path / "d.png", "deltas") is not None
    ax = seen[0].axes[0]
    lo, hi = ax.get_xlim()
    assert -10 <= lo <= -5 and 5 <= hi <= 10  # the 2-point effect and its interval [-1, +5] are readable
    texts = [t.get_text() for t in ax.texts]
    assert "+30.0 [+25.0, +35.0]" in texts  # the clipped effect: at the edge, its value written
    marker_x = [x for line in ax.lines if line.get_marker() == ">" for x in line.get_xdata()]
    assert marker_x and all(lo < x < hi for x in marker_x)


def test_delta_limit():
    assert F.delta_limit([30.0, 2.0, -1.5]) == pytest.approx(1.08 * F.DELTA_LEAST)
    assert F.delta_limit([-8.0, 30.0, float("nan"), None]) == pytest.approx(1.08 * 8.0)
    assert F.delta_limit([]) == pytest.approx(1.08 * F.DELTA_LEAST)


def _fig1_only_root(root: Path) -> Path:
    """A preset run for Figure 1 alone: no delta of any other ablation is measured."""
    for s, (relu, tanh) in enumerate(((3, 15), (4, 17))):
        make_run(root, "smoke", "fig1_tanh.base", s, curve=fig1_curve(relu), lr=0.01, epochs_to_target=relu)
        make_run(root, "smoke", "fig1_tanh", s, curve=fig1_curve(tanh), lr=0.02, epochs_to_target=tanh)
    return root


@pytest.fixture(scope="module")
def fig1_report(tmp_path_factory):
    root = _fig1_only_root(tmp_path_factory.mktemp("fig1runs"))
    return build_report(root, root.parent / (root.name + "-report"))


def test_no_delta_figure_without_measured_deltas(fig1_report, monkeypatch, tmp_path):
    names = {f.path.name for f in fig1_report.figures}
    assert "smoke_figure1.png" in names and "smoke_deltas.png" not in names
    assert not (fig1_report.out_dir / "figures" / "smoke_deltas.png").exists()
    assert "smoke_deltas.png" not in fig1_report.markdown.read_text()
    # The function itself: rows with nothing measured draw nothing.
    seen = _captured(monkeypatch)
    assert F.delta_chart([_row("a", None, 0), _row("b", None, 0, metric="top-5")], tmp_path / "d.png", "t") is None
    assert not seen and not (tmp_path / "d.png").exists()


def test_figure1_arms_differ_in_colour_and_style(fig1_report, monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    lr_grid.figure(fig1_report.analyses["smoke"].comparison("fig1_tanh").extra, tmp_path / "f1.png", "Figure 1")
    ax = seen[0].axes[0]
    arms = {}
    for line in ax.get_lines():
        label = line.get_label()
        if label.startswith(("ReLU", "tanh")):
            arms[label[:4]] = line
    assert set(arms) == {"ReLU", "tanh"}
    import matplotlib.colors as mc

    hsv = {k: colorsys.rgb_to_hsv(*mc.to_rgb(v.get_color())) for k, v in arms.items()}
    assert all(s > 0.4 and v > 0.3 for _, s, v in hsv.values()), hsv  # colours, not greys
    hue_gap = abs(hsv["ReLU"][0] - hsv["tanh"][0])
    assert min(hue_gap, 1 - hue_gap) > 0.2, hsv  # different hues, not two shades of one
    assert arms["ReLU"].get_linestyle() != arms["tanh"].get_linestyle()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("ReLU") for t in legend) and any(t.startswith("tanh") for t in legend)
