"""Which runs the report counts: grouping by (preset, label, fingerprint).

Runs are read only through `reproduce.runs`. A *group* is every run with the same
preset, label and configuration fingerprint (one per seed). A run is *counted*
only when its status (`reproduce.runs.Run.status`) is finished; every other
run is listed, never averaged in.

When a label has several groups (the configuration changed between attempts),
the comparison for an ablation picks a (baseline group, variant group) pair whose
configurations differ exactly by the ablation's overrides, preferring the
fingerprint the current registry would produce, then the most recent group. The
groups not used are listed as superseded.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reproduce import runs
from reproduce.config import (
    PRESETS,
    RENAMED,
    Config,
    ConfigError,
    apply_overrides,
    canonical_flat,
    experiment_identity,
    fingerprint_of,
    flatten,
    get_config,
    valid_keys,
    validate,
)
from reproduce.sources import is_local as is_local_source
from reproduce.sources import local_name, names_itself, tfds_dataset


def is_counted(run: runs.Run) -> bool:
    """The report averages finished runs only (`reproduce.runs.Run.status`); a
    diverged, failed or unfinished run is listed, never averaged in."""
    return run.status == runs.FINISHED


def run_status(run: runs.Run) -> str:
    """The run's status as the report's tables write it."""
    status = run.status
    if status == runs.FINISHED:
        return "finished"
    if status in (runs.DIVERGED, runs.FAILED):
        return "failed: " + str((run.failure or {}).get("reason", "unknown reason"))
    return f"unfinished ({len(run.metrics)} epochs logged)"


def run_date(run: runs.Run) -> str:
    return str(run.env.get("date") or "")


def _date_key(s: str) -> float:
    try:
        d = _dt.datetime.fromisoformat(s)
        if d.tzinfo is None:
            d = d.replace(tzinfo=_dt.timezone.utc)
        return d.timestamp()
    except (TypeError, ValueError):
        return -math.inf


def data_id(run: runs.Run) -> str:
    """The dataset identity recorded with the run (runs made before it was
    recorded: the source's file name)."""
    d = run.meta.get("data_id")
    if d:
        return str(d)
    src = str(run.config.get("data", {}).get("source", ""))
    return src if names_itself(src) else local_name(src)


def fingerprint(run: runs.Run) -> str:
    """The run's experiment fingerprint, recomputed by the one rule
    (`reproduce.config.experiment_identity`) from its config.json, so runs stored
    by older code that lacked a key, or by another machine, group together."""
    try:
        return fingerprint_of(experiment_identity(run.config, data_id(run)))
    except ConfigError:
        return str(run.meta.get("fingerprint") or "?")


def flat_config(run: runs.Run) -> dict:
    """Every identity key of the run (defaults filled in), for diffs and pairing."""
    try:
        return canonical_flat(run.config, data_id(run))
    except ConfigError:
        return {}


def learning_rate(run: runs.Run) -> float | None:
    lr = run.config.get("train", {}).get("learning_rate")
    return float(lr) if lr is not None else None


@dataclass
class Group:
    preset: str
    label: str
    fingerprint: str
    runs: list = field(default_factory=list)

    @property
    def counted(self) -> list:
        return sorted((r for r in self.runs if is_counted(r)), key=lambda r: r.seed)

    @property
    def not_counted(self) -> list:
        return sorted((r for r in self.runs if not is_counted(r)), key=lambda r: r.seed)

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.counted]

    @property
    def latest(self) -> str:
        dates = [run_date(r) for r in self.runs if run_date(r)]
        return max(dates, key=_date_key) if dates else ""

    @property
    def flat(self) -> dict:
        chosen = self.counted or self.runs
        return flat_config(chosen[0]) if chosen else {}

    def by_seed(self) -> dict:
        return {r.seed: r for r in self.counted}


def group_runs(found: Iterable[runs.Run]) -> dict:
    """{preset: {label: [Group, ...]}} for the given runs."""
    out: dict = {}
    for run in found:
        labels = out.setdefault(run.preset, {})
        groups = labels.setdefault(run.label, {})
        fp = fingerprint(run)
        groups.setdefault(fp, Group(run.preset, run.label, fp)).runs.append(run)
    return {p: {lab: list(g.values()) for lab, g in labels.items()} for p, labels in out.items()}


def load(root, damaged: list | None = None) -> dict:
    """Group the readable runs under root; runs with a damaged file (its arrays
    included, read once here to check them) go to `damaged` as
    `reproduce.runs.RunFileError` instead."""
    damaged = [] if damaged is None else damaged

    def readable():
        for run in runs.iter_runs(root, damaged):
            try:
                run.val_correct()
                run.conv1_kernels()
            except runs.RunFileError as e:
                damaged.append(e)
                continue
            yield run

    return group_runs(readable())


def oddities(run: runs.Run) -> list:
    """What in a readable run's files this code does not expect, as short phrases
    (none for a run written by this code): configuration keys it does not know
    (written by newer code, or by hand) or that were removed since (older code,
    `reproduce.config.RENAMED` maps them to None), and result.json values that are
    not finite numbers (NaN, infinity: the comparisons leave them out)."""
    out = []
    flat = flatten(run.config)
    known = set(valid_keys())
    unknown = sorted(k for k in flat if k not in known and k not in RENAMED)
    removed = sorted(k for k in flat if k in RENAMED and RENAMED[k] is None)
    if unknown:
        out.append(
            "config.json has key(s) this code does not know (newer code, or edited by hand): "
            + ", ".join(f"`{k}`" for k in unknown)
        )
    if removed:
        out.append(
            "config.json has key(s) removed since it was written (older code), ignored: "
            + ", ".join(f"`{k}`" for k in removed)
        )
    bad = sorted(k for k, v in (run.result or {}).items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        out.append("result.json holds non-finite values: " + ", ".join(f"`{k}` = {run.result[k]}" for k in bad))
    return out


def odd_runs(grouped: dict) -> list:
    """[(run, [oddities])] of every run in `group_runs`' output that has any, by path."""
    every_run = [r for labels in grouped.values() for groups in labels.values() for g in groups for r in g.runs]
    return [(r, o) for r in sorted(every_run, key=lambda r: str(r.path)) if (o := oddities(r))]


# --------------------------------------------------------------------------------------
# What a run was trained and evaluated on
# --------------------------------------------------------------------------------------

# Known re-encoded copies of public datasets: their pixels differ from the original files.
LOSSY = {
    "cifar10-jpeg": "a lossy JPEG copy of CIFAR-10",
    "imagenette-144-webp": "a lossy WebP copy of Imagenette at 144 px",
}
_TFDS_NAMES = {"imagenet2012": "ILSVRC-2012", "cifar10": "CIFAR-10", "imagenette": "Imagenette"}


def dataset_name(run: runs.Run) -> str:
    """The data set a run used, from its recorded source: a TFDS name the report
    knows ("ILSVRC-2012", "CIFAR-10", "Imagenette"), "synthetic", a known lossy
    copy, or "local files <name>" (content recorded by hash only)."""
    src = str(run.config.get("data", {}).get("source", ""))
    ident = str(run.meta.get("data_id") or src)
    if ident == "synthetic" or src == "synthetic":
        return "synthetic"
    for s in (ident, src):
        if tfds_dataset(s):
            return _TFDS_NAMES.get(tfds_dataset(s), f"TFDS {s[5:]}")
    lossy = [v for k, v in LOSSY.items() if k in src]
    if lossy:
        return lossy[0]
    return f"local files {local_name(src) or '?'}"


def setting_match(run: runs.Run | None, setting: str) -> str:
    """Whether a run's data set is the one a claim was measured on (`Claim.setting`,
    e.g. "ILSVRC-2012 val"): "yes: ...", "no: ..." or "unverified: ..." (local
    files, which the run identifies only by a hash)."""
    if run is None:
        return "no runs"
    paper = setting.rsplit(" ", 1)[0] if setting.split()[-1] in ("val", "test", "train") else setting
    ours = dataset_name(run)
    if ours == paper:
        return f"yes: {ours}"
    if ours.startswith("local files"):
        return f"unverified: {ours} (the paper: {setting})"
    return f"no: {ours} (the paper: {setting})"


def num_classes(run: runs.Run) -> int | None:
    """Classes of the run's data: env.json "num_classes", else from the labels in
    val_correct.npz, else the configuration (model.num_classes, the synthetic
    source's class count)."""
    k = run.env.get("num_classes")
    if isinstance(k, int) and k > 0:
        return k
    vc = run.val_correct()
    if vc is not None and "labels" in vc and vc["labels"].size:
        return int(vc["labels"].max()) + 1
    k = run.config.get("model", {}).get("num_classes")
    if isinstance(k, int) and k > 0:
        return k
    data = run.config.get("data", {})
    if data.get("source") == "synthetic" and isinstance(data.get("synthetic_classes"), int):
        return data["synthetic_classes"]
    return None


def n_val(run: runs.Run) -> int | None:
    """Validation images the run was evaluated on (result.json, else val_correct)."""
    n = (run.result or {}).get("n_val")
    if isinstance(n, int) and n > 0:
        return n
    vc = run.val_correct()
    if vc is not None and "labels" in vc:
        return int(vc["labels"].size)
    return None


def order_groups(groups: list, registry_fp: str | None = None) -> list:
    """Groups with counted runs, most preferred first: the registry's current
    fingerprint, then the most recent, then the one with most finished seeds."""
    ok = [g for g in groups if g.counted]
    return sorted(
        ok,
        key=lambda g: (g.fingerprint == registry_fp, _date_key(g.latest), len(g.counted), g.fingerprint),
        reverse=True,
    )


def current_group(groups: list, registry_fp: str | None = None) -> Group | None:
    """The preferred group with finished runs, else the most recent group at all."""
    ordered = order_groups(groups, registry_fp)
    if ordered:
        return ordered[0]
    if groups:
        return max(groups, key=lambda g: _date_key(g.latest))
    return None


def registry_fingerprint(preset: str, label: str, ablation=None) -> str | None:
    """The fingerprint the current presets and registry would give `label`."""
    try:
        if label == "baseline":
            return get_config(preset).fingerprint()
        if ablation is None:
            return None
        if label == ablation.base_label:
            return ablation.base_config(preset).fingerprint()
        if label == ablation.name:
            return ablation.variant_config(preset).fingerprint()
    except Exception:  # unknown preset or a registry the runs predate
        return None
    return None


def expected_variant(base_config: dict, base_data_id: str, overrides: dict) -> dict:
    """The identity keys of `base` with the ablation's overrides applied."""
    try:
        cfg = Config.from_dict(base_config)
        apply_overrides(cfg, overrides)
        validate(cfg)
        return canonical_flat(cfg, base_data_id)
    except ConfigError:
        return {}


def config_diff(a: dict, b: dict) -> dict:
    """{key: (a value, b value)} over the union of keys (missing = None)."""
    keys = sorted(set(a) | set(b))
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def _same(x, y) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        try:
            return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return x == y


def matches(expected: dict, actual: dict, allowed: Iterable[str] = ()) -> bool:
    allowed = set(allowed)
    keys = (set(expected) | set(actual)) - allowed
    return all(_same(expected.get(k), actual.get(k)) for k in keys)


@dataclass
class Pair:
    base: Group | None
    variant: Group | None
    matched: bool  # configs differ exactly by the ablation (plus allowed keys)
    diff: dict  # config_diff(base, variant)
    unexpected: dict  # part of diff outside the overrides and allowed keys


def choose_pair(
    base_groups: list,
    variant_groups: list,
    overrides: dict,
    allowed: Iterable[str] = (),
    base_fp: str | None = None,
    variant_fp: str | None = None,
    same_runs: bool = False,
    prefer_base: str | None = None,
) -> Pair:
    """Pick the groups an ablation compares (see the module docstring).

    same_runs: both arms are the same runs (an "eval" ablation);
    prefer_base: a baseline fingerprint to try first (the one other ablations use)."""
    bases = order_groups(base_groups, base_fp)
    if prefer_base is not None:
        bases.sort(key=lambda g: g.fingerprint != prefer_base)  # stable: the rest keep their order
    if same_runs:
        b = bases[0] if bases else None
        return Pair(b, b, b is not None, {}, {})
    variants = order_groups(variant_groups, variant_fp)
    allowed = set(allowed)
    for b in bases:
        exp = expected_variant(b.counted[0].config, data_id(b.counted[0]), overrides)
        for v in variants:
            if matches(exp, v.flat, allowed):
                d = config_diff(b.flat, v.flat)
                return Pair(b, v, True, d, {})
    b = bases[0] if bases else None
    v = variants[0] if variants else None
    if b is None or v is None:
        return Pair(b, v, False, {}, {})
    d = config_diff(b.flat, v.flat)
    exp = expected_variant(b.counted[0].config, data_id(b.counted[0]), overrides)
    unexpected = {k: d[k] for k in d if k not in allowed and not _same(exp.get(k), v.flat.get(k))}
    return Pair(b, v, not unexpected, d, unexpected)


def relpath(path: Path, root) -> str:
    try:
        return str(Path(path).relative_to(Path(root)))
    except ValueError:
        return portable(str(path))


# The repository the report is built from: absolute paths inside it are printed
# relative to it.
REPO = Path(__file__).resolve().parents[1]
# An absolute path (or ~/..., ./..., ../...) standing as a word of its own: not the
# tail of a relative path, a number ("3/4") or a URL ("https://...").
_PATH_WORD = re.compile(r"(?<![\w.~/:$-])(?:~|\.\.?)?/[^\s'\"`,;=()\[\]{}<>|]+")


def portable(text: str, data_sources: Iterable[str] = (), repo: Path | None = None) -> str:
    """`text` (a command line, a folder) with no path of the machine it ran on, so a
    committed report reads the same wherever it was built: a local data source
    (any of `data_sources`, as recorded in `data.source`) becomes its file name (the
    report names the file's digest beside it), an absolute path inside the
    repository becomes relative to it, and any other absolute or home path, or a
    relative one that leaves the folder ("../x"), becomes its base name. Other
    relative paths that are not data are kept."""
    repo = os.path.normpath(str(repo if repo is not None else REPO))
    sources = {os.path.normpath(os.path.expanduser(s)) for s in data_sources if is_local_source(str(s))}

    def rewrite(m: re.Match) -> str:
        word, trail = m.group(0), ""
        while len(word) > 1 and word[-1] in ".:":  # the sentence's full stop, not the path's
            word, trail = word[:-1], word[-1] + trail
        norm = os.path.normpath(os.path.expanduser(word))
        if norm in sources:
            return os.path.basename(norm) + trail
        if not os.path.isabs(norm):
            # A path out of the folder it ran in ("../data/x") names nothing on a reader's machine.
            return (os.path.basename(norm) if norm.startswith(".." + os.sep) else word) + trail
        if norm == repo:
            return "." + trail
        if norm.startswith(repo + os.sep):
            return os.path.relpath(norm, repo) + trail
        return (os.path.basename(norm) or word) + trail

    text = str(text)
    for s in sorted(sources, key=len, reverse=True):  # a relative data path ("data/x.tar") too
        if not s.startswith(("/", ".")):
            text = re.sub(r"(?<![\w./~-])" + re.escape(s) + r"(?![\w/-]|\.\w)", os.path.basename(s), text)
    return _PATH_WORD.sub(rewrite, text)


def preset_order(presets: Iterable[str]) -> list:
    known = [p for p in PRESETS if p in presets]
    return known + sorted(p for p in presets if p not in PRESETS)
