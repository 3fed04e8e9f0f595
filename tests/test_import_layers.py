"""Imports inside ``algan`` point downwards only, and no modules import each other in a cycle.

Static: every ``import`` statement of every module is read with ``ast`` (nothing is imported or executed), lazy
imports inside functions included: a lazy import is still a dependency. Backends chosen by name at run time
(``importlib.import_module`` of a string, as in ``algan.runtime.runners.base.BACKENDS``) are plug-ins, not edges.

The layers, bottom to top (the product's flow: the contract, the runtime that serves it, training, export, the
daemon, the commands; a group is a subpackage, or a top-level module):

0. ``algan`` (the package: ``__version__``), ``contract`` (names, keys, file names, the threshold rule, the typed
   bundle manifest; stdlib, numpy and pydantic only), ``trt_logging``, ``progress`` (progress bars
   and log lines) -- import nothing of the package
1. ``runtime``: the torch-free runtime (frame preparation, runners, maps, bundle verification, the Inferencer); it
   needs only the contract (its torch backend is ``export.runner_torch``, chosen by name at run time)
2. ``data``: data sets, videos
3. ``features``: backbones (torch)
4. ``model``: heads, detector, training and fitting (torch)
5. ``bundle``: a model directory <-> the torch detector (builds model classes)
6. ``calibration``: thresholds and re-calibration of a bundle
7. ``export``: ONNX / TensorRT / Triton from a bundle (the TensorRT engine builder is torch-free and also runs on
   the device)
8. ``edge``: the daemon around a runtime runner (capture, alarms, publishing)
9. ``report`` (HTML report of predictions)
10. ``cli``: the command-line tools

A module may import its own group and any group of a lower layer. A new subpackage or top-level module must be
placed in :data:`LAYERS` (the test says so).

Inside ``edge`` the same rule holds between its stages (:data:`EDGE_LAYERS`, bottom to top): ``errors`` and ``logs``,
the shared leaves (``state``, ``alarm``, ``stats``, ``sdnotify``), then ``config``, then the stages a frame travels
through -- ``capture`` and ``publish`` -- and ``metrics``, which never import each other, then ``doctor`` and ``app``
(the composition root).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
assert _spec is not None and _spec.loader is not None
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph
_spec.loader.exec_module(import_graph)

LAYERS: list[set[str]] = [
    {"algan", "contract", "trt_logging", "progress"},
    {"runtime"},
    {"data"},
    {"features"},
    {"model"},
    {"bundle"},
    {"calibration"},
    {"export"},
    {"edge"},
    {"report"},
    {"cli"},
]
RANK = {group: i for i, layer in enumerate(LAYERS) for group in layer}
#: the stages of ``algan.edge`` (a subpackage or a module directly under it), bottom to top; one layer's stages do
#: not import each other
EDGE_LAYERS: list[set[str]] = [
    {"errors", "logs"},
    {"state", "alarm", "stats", "sdnotify"},
    {"config"},
    {"capture", "publish", "metrics"},
    {"doctor", "app"},
]
EDGE_RANK = {stage: i for i, layer in enumerate(EDGE_LAYERS) for stage in layer}
#: modules the edge runtime imports on a machine without torch: no module-level torch import
TORCH_FREE_GROUPS = {"contract", "trt_logging", "progress", "runtime", "edge"}


def test_every_group_has_a_layer():
    groups = {import_graph.group_of(m) for m in import_graph.package_modules()}
    unplaced = sorted(groups - set(RANK))
    assert not unplaced, f"new groups {unplaced}: add each to LAYERS in {Path(__file__).name} (what may it import?)"


def test_no_import_cycles():
    cycles = import_graph.cycles(import_graph.import_graph())
    assert not cycles, "import cycles (break them: move the shared part into a lower module): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_imports_point_downwards():
    graph = import_graph.import_graph()
    upward = []
    for src, targets in sorted(graph.items()):
        g = import_graph.group_of(src)
        for t in sorted(targets):
            h = import_graph.group_of(t)
            if h != g and RANK.get(h, -1) >= RANK.get(g, -1):
                upward.append(f"{src} -> {t} (layer {g}={RANK.get(g)} imports {h}={RANK.get(h)})")
    assert not upward, "imports that do not point to a lower layer:\n" + "\n".join(upward)


def test_torch_free_modules_have_no_module_level_torch_import():
    bad = []
    for name, path in import_graph.package_modules().items():
        if import_graph.group_of(name) not in TORCH_FREE_GROUPS:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{name}: import {n}" for n in names if n == "torch" or n.startswith("torch.")]
    assert not bad, bad


def test_the_walker_sees_lazy_and_from_imports(tmp_path):
    pkg = tmp_path / "algan"
    (pkg / "edge").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "edge" / "__init__.py").write_text("")
    (pkg / "contract.py").write_text("def f():\n    from algan.edge import app\n")
    (pkg / "edge" / "app.py").write_text("from algan.contract import f\nfrom . import app2\n")
    (pkg / "edge" / "app2.py").write_text("import algan.contract\n")
    graph = import_graph.import_graph(tmp_path)
    assert graph["algan.contract"] == {"algan.edge.app"}
    assert graph["algan.edge.app"] == {"algan.contract", "algan.edge.app2"}
    assert import_graph.cycles(graph) == [["algan.contract", "algan.edge.app", "algan.edge.app2"]]


def edge_stage(module: str) -> str | None:
    """The stage of an ``algan.edge`` module (``algan.edge.capture.camera`` -> ``capture``), else ``None``."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["algan", "edge"] and len(parts) > 2 else None


def test_every_edge_stage_has_a_layer():
    stages = {s for m in import_graph.package_modules() if (s := edge_stage(m)) is not None}
    unplaced = sorted(stages - set(EDGE_RANK))
    assert not unplaced, f"new edge stages {unplaced}: add each to EDGE_LAYERS in {Path(__file__).name}"


def test_edge_stages_point_downwards():
    upward = []
    for src, targets in sorted(import_graph.import_graph().items()):
        s = edge_stage(src)
        if s is None:
            continue
        for t in sorted(targets):
            u = edge_stage(t)
            if u is not None and u != s and EDGE_RANK.get(u, -1) >= EDGE_RANK.get(s, -1):
                upward.append(f"{src} -> {t} (edge stage {s}={EDGE_RANK.get(s)} imports {u}={EDGE_RANK.get(u)})")
    assert not upward, "edge imports that do not point to a lower stage:\n" + "\n".join(upward)
