"""algan.contract: the one threshold rule (training and re-calibration agree), the atomic directory replace,
hashing, and its constants said only there."""

from __future__ import annotations

import ast
import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from algan.contract import (
    atomic_directory,
    empirical_threshold,
    file_sha256,
    order_statistic_rank,
    scores_needed,
)


@pytest.mark.parametrize(("n", "fpr", "rank"), [(100, 0.05, 96), (124, 0.01, 124), (99, 0.01, 99), (19, 0.05, 19)])
def test_order_statistic_rank(n, fpr, rank):
    assert order_statistic_rank(n, fpr) == rank
    assert scores_needed(fpr) <= n


def test_training_and_calibration_use_the_same_threshold():
    from algan.model.evaluation.threshold import QuantileThreshold
    from algan.model.fit import quantile_threshold

    s = np.random.default_rng(0).normal(size=300)
    for fpr in (0.01, 0.05, 0.2):
        center, thr = quantile_threshold(s, fpr)
        q = QuantileThreshold(fpr).fit(s)
        assert thr == q.threshold_ == np.sort(s)[order_statistic_rank(300, fpr) - 1]
        assert center == q.center_ == np.median(s)
        assert q.expected_fpr_ <= fpr


def test_too_few_scores_training_says_so_calibration_refuses(caplog):
    from algan.model.evaluation.threshold import QuantileThreshold
    from algan.model.fit import quantile_threshold

    s = np.arange(48, dtype=np.float64)  # 48 held-out normals cannot resolve 1 % (needs 99)
    with caplog.at_level(logging.WARNING, logger="algan.model.fit"):
        _, thr = quantile_threshold(s, 0.01)
    assert thr == 47.0
    assert "48 held-out normal images cannot resolve a per-frame false-alarm rate of 0.01 (needs >= 99)" in caplog.text
    assert "maximum score" in caplog.text
    with pytest.raises(ValueError, match="48 normal scores cannot resolve a per-frame FPR of 0.01"):
        QuantileThreshold(0.01).fit(s)
    with pytest.raises(ValueError, match=r"needs >= 99"):
        empirical_threshold(s, 0.01, clip=False)
    r = empirical_threshold(s, 0.01, clip=True)
    assert (r.threshold, r.rank, r.resolved, r.needed) == (47.0, 48, False, 99)
    assert r.expected_fpr == pytest.approx(1 / 49)
    with pytest.raises(ValueError, match="finite"):
        empirical_threshold(np.array([1.0, np.nan]), 0.1, clip=True)


def test_atomic_directory_replaces_and_keeps_the_old_on_failure(tmp_path):
    final = tmp_path / "bundle"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("interrupted")
    assert (final / "a.txt").read_text() == "one"  # untouched
    with atomic_directory(final) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary or old copies left


def test_file_sha256(tmp_path):
    p = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000
    p.write_bytes(data)
    assert file_sha256(p, chunk=1000) == file_sha256(p) == hashlib.sha256(data).hexdigest()


def _module_constants(path: Path) -> set[str]:
    """UPPER_CASE names a module assigns at its top level (``X = ...`` / ``X: T = ...``)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        names |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()}
    return names


def _contract_constants() -> dict[str, object]:
    """UPPER_CASE names the modules of algan/contract/ assign, with their values."""
    import algan.contract

    return {name: getattr(algan.contract, name) for p in Path(algan.contract.__file__).parent.glob("*.py")
            for name in _module_constants(p) if hasattr(algan.contract, name)}


def test_the_contracts_constants_are_defined_only_there():
    """FORMAT_VERSION, file names, tensor names and metadata keys are imported from algan.contract, never re-defined
    (a copy, e.g. the edge's own FORMAT_VERSION, would silently disagree after a format bump)."""
    import algan
    import algan.contract

    pkg = Path(algan.__file__).parent
    said = _contract_constants()
    assert {"FORMAT_VERSION", "ONNX_FILE", "FP16_ONNX_FILE", "ENGINE_FILE", "INPUT_NAME", "KEY_MODEL_ID"} <= set(said)
    contract_dir = Path(algan.contract.__file__).parent
    again = sorted(f"{p.relative_to(pkg.parent)}: {name}" for p in pkg.rglob("*.py") if p.parent != contract_dir
                   for name in _module_constants(p) & set(said))
    assert not again, f"re-defined outside algan/contract/ (import them from there): {again}"


def test_no_contract_file_name_or_key_is_spelled_out_elsewhere():
    """A bundle file name (``model.fp16.onnx``) or a metadata key (``algan.model_id``) written as a string literal in
    code outside algan/contract/ is a second definition: the code names the constant instead (docstrings and
    messages inside f-strings are prose and not counted)."""
    import algan
    import algan.contract

    pkg = Path(algan.__file__).parent
    contract_dir = Path(algan.contract.__file__).parent
    values = {v: k for k, v in _contract_constants().items()
              if isinstance(v, str) and ("." in v and not v.startswith("."))}
    assert {"model.fp16.onnx", "algan.json", "algan.model_id", "int8_calibration.safetensors"} <= set(values)
    found = []
    for p in pkg.rglob("*.py"):
        if p.parent == contract_dir:
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        in_fstrings = {id(c) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for c in n.values}
        found += [f"{p.relative_to(pkg.parent)}:{n.lineno}: {n.value!r} (algan.contract.{values[n.value]})"
                  for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and n.value in values and id(n) not in docs and id(n) not in in_fstrings]
    assert not found, "\n".join(sorted(found))


def test_center_and_threshold_is_the_calibration_rule():
    from algan.contract import center_and_threshold

    s = np.arange(1.0, 200.0)  # 199 scores: X_(198) = 198 resolves 1 %
    center, thr, rule = center_and_threshold(s, 0.01)
    assert (center, thr, rule.resolved) == (100.0, 198.0, True)
    center, thr, rule = center_and_threshold(np.array([2.0, 2.0, 2.0]), 0.01)  # tied: widened, unresolved
    assert center == 2.0 and thr > center and not rule.resolved
