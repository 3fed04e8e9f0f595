"""Selection rules for ``--head auto`` studied offline (not a test) on the scores ``auto_select.py --dump`` wrote.

Per data set the dump holds every candidate's scores on the held-out normals, on the synthetic defects (``per_image``
of each family per held-out normal; defect ``j`` is the same for any ``per_image``, so the first ``2 N`` of each
family are one draw of two per image (the product's count until Session 15), the next ``2 N`` an independent second
draw, ...) and on the real test images. For
each rule this prints the candidate it picks on each set and its shortfall in real image AUROC against the best
candidate in hindsight, then the worst and mean shortfall over the sets.

Rules (all with ties to the cheaper candidate, :func:`algan.model.select.choose`'s order):

- ``draw1``: the shipped rule (recall at the target FPR, ties within 0.02) on the first draw of two per image.
- ``draw2``, ``draw3``: the same rule on the second and third draws (how stable is the choice?).
- ``pooled2``, ``pooled``: the same rule on the first two draws, and on every draw, together (4 and ``per_image``
  defects per image; ``pooled`` of a ``--per-image 6`` dump is what the product draws since Session 15,
  :data:`algan.model.select.DEFECTS_PER_IMAGE`).
- ``top5``: the recall averaged over the thresholds set at the 1st..5th highest held-out normal (a threshold that
  does not hang on one normal), ties within 0.02.
- ``bootstrap``: the shipped figure; candidates whose paired bootstrap interval (normals and defects resampled
  together, 200 draws; each resample's threshold the empirical order statistic, since repeated normals defeat a
  tail fit) of the difference to the leader contains 0 are tied.

Usage::

    python benchmarks/auto_rules.py DUMP_DIR [--target-fpr 0.01]
    python benchmarks/auto_rules.py --smoke     # seconds: constructed scores

Figures: benchmarks/RESULTS.md, "Session 15".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algan.contract import empirical_threshold  # noqa: E402
from algan.data.defects import DEFECT_FAMILIES  # noqa: E402
from algan.model.evaluation.image_eval import auroc  # noqa: E402
from algan.model.evaluation.threshold import recall_at_fpr  # noqa: E402
from algan.model.select import RECALL_TIE, cost_rank  # noqa: E402


def load(path: Path) -> dict:
    """``{"names": [...], "normal": {name: (N,)}, "defect": {name: (M,)}, "test": {name: (T,)}, "y", "kinds",
    "per_image", "n_normal"}`` of one dump."""
    z = np.load(path, allow_pickle=False)
    names = sorted({k.split("/")[0] for k in z.files if "/" in k}, key=cost_rank)
    return {"names": names, **{part: {n: z[f"{n}/{part}"] for n in names} for part in ("normal", "defect", "test")},
            "y": z["y"], "kinds": z["kinds"].astype(str), "per_image": int(z["per_image"]),
            "n_normal": int(z["n_normal"])}


def draw_index(d: dict) -> np.ndarray:
    """The draw (0, 1, 2, ...: two defects per image each) of every synthetic defect: defects come family by family,
    each family ``per_image * N`` long, draw 0's ``2 N`` first."""
    n, per = d["n_normal"], d["per_image"]
    j = np.concatenate([np.arange(per * n) for _ in DEFECT_FAMILIES])
    return j // (2 * n)


def pick(d: dict, figure: Callable[[np.ndarray, np.ndarray], float], sel: np.ndarray,
         tied: Callable[[str, str], bool] | None = None) -> str:
    """The candidate a rule picks: the highest ``figure(normal, defect[sel])``; candidates within :data:`RECALL_TIE`
    of it (or ``tied(leader, other)``) are tied and the cheapest wins."""
    fig = {n: figure(d["normal"][n], d["defect"][n][sel]) for n in d["names"]}
    lead = max(fig, key=lambda n: fig[n])
    if tied is None:
        group = [n for n in d["names"] if fig[n] >= fig[lead] - RECALL_TIE]
    else:
        group = [n for n in d["names"] if n == lead or tied(lead, n)]
    return min(group, key=cost_rank)


def top5_recall(normal: np.ndarray, defect: np.ndarray) -> float:
    """Recall averaged over the thresholds at the 1st..5th highest normal score."""
    top = np.sort(normal)[::-1][:5]
    return float(np.mean([(defect >= t).mean() for t in top]))


def bootstrap_tie(d: dict, sel: np.ndarray, target_fpr: float, draws: int = 200, seed: int = 0):  # noqa: ANN201
    """``tied(leader, other)``: the paired bootstrap interval (2.5-97.5 %) of recall(leader) - recall(other) holds 0."""
    rng = np.random.default_rng(seed)
    n, m = len(d["normal"][d["names"][0]]), int(sel.sum())
    idx = [(rng.integers(0, n, n), rng.integers(0, m, m)) for _ in range(draws)]

    def recall(name: str, i: np.ndarray, j: np.ndarray) -> float:
        # a resample repeats normals, which a tail fit refuses: its threshold is the empirical order statistic
        thr = empirical_threshold(d["normal"][name][i], target_fpr, clip=True).threshold
        return float((d["defect"][name][sel][j] >= thr).mean())

    def tied(a: str, b: str) -> bool:
        diff = [recall(a, i, j) - recall(b, i, j) for i, j in idx]
        lo, hi = np.percentile(diff, [2.5, 97.5])
        return bool(lo <= 0.0 <= hi)

    return tied


def rules(d: dict, target_fpr: float) -> dict[str, str]:
    """``{rule: chosen candidate}`` for one data set's dump."""
    draw = draw_index(d)
    shipped = lambda nrm, dfc: float(recall_at_fpr(nrm, dfc, target_fpr))  # noqa: E731
    out = {"draw1": pick(d, shipped, draw == 0)}
    for k in range(1, int(draw.max()) + 1):
        out[f"draw{k + 1}"] = pick(d, shipped, draw == k)
    if draw.max() >= 2:
        out["pooled2"] = pick(d, shipped, draw <= 1)
    out["pooled"] = pick(d, shipped, np.ones_like(draw, bool))
    out["top5"] = pick(d, top5_recall, draw == 0)
    out["bootstrap"] = pick(d, shipped, draw == 0, bootstrap_tie(d, draw == 0, target_fpr))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dump", type=Path, nargs="?", help="the folder auto_select.py --dump wrote")
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--smoke", action="store_true", help="seconds: constructed scores")
    args = p.parse_args(argv)
    if args.smoke:
        args.dump = Path(tempfile.mkdtemp(prefix="algan_rules_smoke_"))
        rng = np.random.default_rng(0)
        n, per = 40, 4
        kinds = np.array(["spot"] * (per * n) + ["uneven"] * (per * n))
        y = np.r_[np.zeros(50), np.ones(50)]
        arrays = {"y": y, "kinds": kinds, "per_image": np.int64(per), "n_normal": np.int64(n)}
        for name, shift in (("feature:knn", 0.5), ("patch:padim", 2.0), ("patch:padim@3x3", 2.0)):
            arrays[f"{name}/normal"] = rng.standard_normal(n)
            arrays[f"{name}/defect"] = rng.standard_normal(2 * per * n) + shift
            arrays[f"{name}/test"] = rng.standard_normal(100) + shift * y
        np.savez(args.dump / "constructed.npz", **arrays)
    if args.dump is None:
        p.error("give the dump folder (auto_select.py --dump DIR) or --smoke")
    try:
        return report(args)
    finally:
        if args.smoke:  # the folder this run created
            import shutil

            shutil.rmtree(args.dump, ignore_errors=True)


def report(args: argparse.Namespace) -> int:
    files = sorted(args.dump.glob("*.npz"))
    if not files:
        print(f"no *.npz in {args.dump}", file=sys.stderr)
        return 1
    table: dict[str, dict[str, float]] = {}
    for f in files:
        d = load(f)
        real = {n: auroc(d["y"], d["test"][n]) for n in d["names"]}
        best = max(real.values())
        chosen = rules(d, args.target_fpr)
        print(f"{f.stem:<10} best {max(real, key=lambda n: real[n])} {best:.4f} | " +
              "  ".join(f"{r} {c} {real[c] - best:+.3f}" for r, c in chosen.items()), flush=True)
        for r, c in chosen.items():
            table.setdefault(r, {})[f.stem] = real[c] - best
    print("\nrule        worst    mean   (shortfall in real image AUROC against the best candidate)")
    for r, falls in table.items():
        v = np.array(list(falls.values()))
        print(f"{r:<10} {v.min():+.3f} {v.mean():+.3f}")
    if args.smoke:
        assert table["pooled"]["constructed"] == 0.0, table  # the clearly better head is picked
    return 0


if __name__ == "__main__":
    sys.exit(main())
