"""The import graph of reproduce/, ablations/ and reports/ points one way.

The graph is read from the source (every `import` statement, at module level and
inside functions), so a lazy import that would close a cycle, or pull training code
into the report, is caught before anything runs it. The modules are found on disk,
not listed here.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from reproduce.config import get_config
from reproduce.model import build_model, inference_model

pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reproduce", "ablations", "reports")
# What the report may not load: the trainer and the networks.
TRAINING_CODE = ("reproduce.train", "reproduce.distribute", "reproduce.model")


def _modules() -> dict:
    """{dotted name: path} of every module of PACKAGES."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported(node, module: str, is_package: bool, modules: dict) -> list:
    """The dotted names an import statement in `module` names (the module itself
    for `from m import name` when `name` is not a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the package that holds `module`
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph() -> dict:
    """{module: {module it imports}} over PACKAGES; an import of a name inside a
    module counts as an import of that module."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, path.name == "__init__.py", modules):
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reachable(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_is_read_from_the_source():
    """The reader sees absolute, relative and function-level imports (checked on
    edges the library has), so the checks below are not vacuous."""
    graph = import_graph()
    assert {"reproduce.runs", "reproduce.data", "reproduce.train"} <= set(graph)
    assert "reproduce.files" in graph["reproduce.runs"]  # from reproduce.files import ...
    assert "reproduce.data.common" in graph["reproduce.data.cache"]
    assert "reproduce.train" in graph["reproduce"]  # inside the package's __getattr__
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_are_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_library_imports_nothing_of_the_ablations_or_the_report():
    graph = import_graph()
    wrong = {
        m: sorted(t for t in ts if t.split(".")[0] != "reproduce")
        for m, ts in graph.items()
        if m.split(".")[0] == "reproduce"
    }
    assert {m: ts for m, ts in wrong.items() if ts} == {}


def test_the_report_reaches_no_training_code():
    graph = import_graph()
    reached = {m: sorted(_reachable(graph, m) & set(TRAINING_CODE)) for m in graph if m.split(".")[0] == "reports"}
    assert {m: r for m, r in reached.items() if r} == {}


def _fresh(code: str, backend: str = "tensorflow") -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


def test_config_runs_and_the_report_load_no_keras_and_no_training_code():
    heavy = ("keras", "tensorflow", "jax") + TRAINING_CODE
    reports = sorted(m for m in import_graph() if m.split(".")[0] == "reports" and m != "reports.__main__")
    code = (
        f"import sys, importlib\n"
        f"import reproduce.config, reproduce.runs\n"
        f"light = [m for m in {heavy!r} if m in sys.modules]\n"
        f"for m in {reports!r}: importlib.import_module(m)\n"
        f"print(light, [m for m in {TRAINING_CODE!r} if m in sys.modules])"
    )
    assert _fresh(code) == "[] []"


@pytest.mark.parametrize("first", ["reproduce", "keras"])
def test_import_reproduce_is_all_a_saved_model_needs(tmp_path, first):
    """model.keras holds the project's layers (Augment, LRN, the initializers):
    `import reproduce` registers them, imported before or after Keras."""
    cfg = get_config("smoke", ["model.arch=alexnet", "model.lrn=true"])
    net = build_model(cfg.model, cfg.data.crop_size, 3, 0.0, 0)
    mean = np.random.default_rng(0).uniform(0, 255, (cfg.data.image_size,) * 2 + (3,))
    model = inference_model(cfg, net, SimpleNamespace(mean_image=mean.astype(np.float32)))
    model.save(tmp_path / "model.keras")
    x = np.random.default_rng(1).integers(0, 256, (2,) + model.input_shape[1:], dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    imports = "import reproduce\nimport keras" if first == "reproduce" else "import keras\nimport reproduce"
    _fresh(
        f"{imports}\nimport numpy as np\n"
        f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n"
        f"print('ok')",
        keras.backend.backend(),
    )
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
