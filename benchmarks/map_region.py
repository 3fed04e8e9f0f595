"""Where the region box and the peak marker come from (not a test): rules compared against ground-truth masks.

What an operator sees of an alarm is a box (``region.box`` in the MQTT event, drawn when no mask is drawn) and a
peak marker. This benchmark measures, on the same corrected maps (the product's default ``standardize``), every
candidate rule for the box and the peak:

Box rules (``box_rule``), all on the calibrated map (1.0 = the image threshold; the pixel threshold ``p`` = the
0.999 quantile of the normal test images' map cells, the rate ``algan-calibrate --pixel-fpr 0.001`` sets):

- ``cells-half-largest``: the map cells at ``max(1, peak / 2)``, the largest 8-connected component (the box of
  :func:`algan.runtime.maps.region_from_map` before this benchmark).
- ``cells-half-peak``: the same cells, the component that holds the peak.
- ``mask-peak``: the map upsampled to the ROI (bilinear, what :func:`algan.runtime.maps.mask_from_map` draws),
  thresholded at ``p``, the component that holds the peak pixel: the box of the drawn mask's blob under the marker.
- ``mask-half-peak``: the upsampled map at ``max(p, peak / 2)``, the component that holds the peak pixel.
- ``up-half-peak``: the upsampled map at ``max(1, peak / 2)``, the component that holds the peak pixel.

Peak rules: ``cell`` (the centre of the highest map cell, the runtime's marker) and ``upsampled`` (the highest pixel
of the upsampled map). A peak hits when it lies within 4 px of the ground-truth mask (the issue's definition).

Per data set and head it prints, over the flagged defect images (score >= the 1 % FPR threshold of the test
normals): median IoU of each rule's box with the ground-truth component box it overlaps best, the median ratio of
the box's area to that component box's area, and the peak hit rates. Features, heads and maps as
benchmarks/map_border.py builds them (its ``--cache`` is shared).

Usage::

    python benchmarks/map_region.py [--sets mtd,metal,ballscrew] [--heads padim,patchcore,algan] [--max-train N]
        [--max-test N] [--cache DIR] [--json]
    python benchmarks/map_region.py --smoke     # seconds: a tiny synthetic set

Figures: benchmarks/RESULTS.md, "Session 13: the region box and the peak marker".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._kit import finish, sweep_sets  # noqa: E402
from benchmarks.map_border import data_sets, eval_set, smoothed_maps  # noqa: E402

BOX_RULES = ("cells-half-largest", "cells-half-peak", "mask-peak", "mask-half-peak", "up-half-peak")
#: pixels from the ground-truth mask within which a peak marker counts as on the defect
HIT_PX = 4


def _component_box(binary: np.ndarray, at: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """Box ``(x, y, w, h)`` of the 8-connected component holding pixel ``at = (i, j)``, or of the largest component
    when ``at`` is ``None``; ``None`` when there is none."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    if at is None:
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    else:
        k = int(labels[at])
        if k == 0:
            return None
    return tuple(int(v) for v in stats[k, :4])  # type: ignore[return-value]


def rule_box(rule: str, cells: np.ndarray, size: tuple[int, int], pixel_level: float) -> tuple[int, int, int, int]:
    """The box of ``rule`` for one calibrated map ``cells`` (h, w) on an ROI of ``size = (H, W)`` pixels."""
    from algan.runtime.maps import region_from_map, upsample_map

    h, w = size
    if rule == "cells-half-largest":
        return region_from_map(cells, (0, 0, w, h), 1.0).box
    if rule == "cells-half-peak":
        pi, pj = np.unravel_index(int(np.argmax(cells)), cells.shape)
        peak = float(cells[pi, pj])
        box = _component_box(cells >= max(1.0, peak / 2), (int(pi), int(pj)))
        if box is None:
            return region_from_map(cells, (0, 0, w, h), 1.0).box
        mh, mw = cells.shape
        j0, i0, bw, bh = box
        x0, x1 = int(np.floor(j0 * w / mw)), int(np.ceil((j0 + bw) * w / mw))
        y0, y1 = int(np.floor(i0 * h / mh)), int(np.ceil((i0 + bh) * h / mh))
        return (x0, y0, x1 - x0, y1 - y0)
    up = upsample_map(cells, size)
    at = np.unravel_index(int(np.argmax(up)), up.shape)
    peak = float(up[at])
    level = {"mask-peak": pixel_level, "mask-half-peak": max(pixel_level, peak / 2),
             "up-half-peak": max(1.0, peak / 2)}[rule]
    box = _component_box(up >= min(level, peak), (int(at[0]), int(at[1])))
    return box if box is not None else (int(at[1]), int(at[0]), 1, 1)


def peak_pixel(rule: str, cells: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """``(y, x)`` of the peak marker on an ROI of ``size`` for peak rule ``cell`` or ``upsampled``."""
    from algan.runtime.maps import region_from_map, upsample_map

    h, w = size
    if rule == "cell":
        px, py = region_from_map(cells, (0, 0, w, h), 1.0).peak
        return int(py), int(px)
    up = upsample_map(cells, size)
    at = np.unravel_index(int(np.argmax(up)), up.shape)
    return int(at[0]), int(at[1])


def region_figures(cal: np.ndarray, masks: np.ndarray, flagged: np.ndarray, labels: np.ndarray,
                   pixel_level: float) -> dict:
    """Median IoU and area ratio per box rule and hit rate per peak rule over the flagged defect images with a
    mask (``cal``: calibrated maps (N, h, w); ``masks``: bool (N, H, W))."""
    from algan.calibration.localisation import box_iou, mask_boxes

    idx = [i for i in np.flatnonzero((labels == 1) & flagged) if masks[i].any()]
    out: dict = {"n": len(idx)}
    if not idx:
        return out
    size = masks.shape[1:]
    for rule in BOX_RULES:
        ious, ratios = [], []
        for i in idx:
            box = rule_box(rule, cal[i], size, pixel_level)
            gts = mask_boxes(masks[i])
            k = int(np.argmax([box_iou(box, g) for g in gts]))
            ious.append(box_iou(box, gts[k]))
            ratios.append(box[2] * box[3] / max(gts[k][2] * gts[k][3], 1))
        out[f"iou:{rule}"] = round(float(np.median(ious)), 4)
        out[f"area_ratio:{rule}"] = round(float(np.median(ratios)), 3)
    kernel = np.ones((2 * HIT_PX + 1, 2 * HIT_PX + 1), np.uint8)
    for rule in ("cell", "upsampled"):
        hits = []
        for i in idx:
            near = cv2.dilate(masks[i].astype(np.uint8), kernel) > 0
            hits.append(bool(near[peak_pixel(rule, cal[i], size)]))
        out[f"hit:{rule}"] = round(float(np.mean(hits)), 4)
    return out


def run_set(name: str, root: Path, layout: str, heads: list[str], size: int, cache: Path | None, max_test: int,
            max_train: int, smoke: bool) -> list[dict]:
    from algan.features.patch import MapNormalization, MapPostprocess, PatchSpec
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.gan.feature import AlganConfig

    post = MapPostprocess(PatchSpec(map_norm="none"), (size, size))
    rows = []
    for head_name in heads:  # each head on its default blocks, as algan-train fits it
        _, test, ev = eval_set(name, root, layout, size, 0, cache, max_test, max_train, smoke, head_name)
        if ev.masks is None:
            print(f"# {name}: no masks, skipped", flush=True)
            return []
        y = np.array([s.label for s in test])
        over = {"seed": 0, **({"epochs": 1, "min_steps": 20} if smoke else {})}
        settings = FitSettings(head=head_name, variant="patch", patch=PatchSpec(),
                               algan=AlganConfig.preset("patch", **over))
        head, *_ = fit_patch_head(settings, ev.train, ev.n_cells, False)
        base = smoothed_maps(head, post, ev.test)
        maps = MapNormalization("standardize", post.map_size).fit(smoothed_maps(head, post, ev.stats))(base)
        scores = post.reduce(maps).numpy()
        normal = scores[y == 0]
        thr = float(np.quantile(normal, 0.99, method="higher"))
        center = float(np.median(normal))
        cal = ((maps - center) / max(thr - center, 1e-12)).numpy()
        pixel_level = float(np.quantile(cal[y == 0].ravel(), 0.999, method="higher"))
        row = {"data": name, "head": head_name, "pixel_level": round(pixel_level, 4),
               **region_figures(cal, np.asarray(ev.masks, bool), scores > thr, y, pixel_level)}
        rows.append(row)
        print(f"{name:<9} {head_name:<9} n={row['n']:<4} p={pixel_level:.3f}  "
              + "  ".join(f"{r}: IoU {row.get('iou:' + r, float('nan')):.3f} x{row.get('area_ratio:' + r, 0):.1f}"
                          for r in BOX_RULES)
              + f"  hit cell {row.get('hit:cell', float('nan')):.3f} up {row.get('hit:upsampled', float('nan')):.3f}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mtd,metal,ballscrew", help="comma-separated data sets with masks")
    p.add_argument("--heads", default="padim,patchcore,algan", help="comma-separated patch heads")
    p.add_argument("--size", type=int, default=224, help="square input size in pixels (default 224)")
    p.add_argument("--max-test", type=int, default=0, help="score a seeded subset of this many test images (0 = all)")
    p.add_argument("--max-train", type=int, default=0, help="train on a seeded subset of this many images (0 = all)")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--cache", type=Path, default=None, help="cache the extracted features here")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    p.add_argument("--smoke", action="store_true", help="seconds: tiny synthetic metal at 96 px")
    args = p.parse_args(argv)
    size = args.size
    heads = [h for h in args.heads.split(",") if h]
    if args.smoke:
        import tempfile

        args.sets, size, args.cache, heads = "metal", 96, None, ["padim"]
        args.work = Path(tempfile.mkdtemp(prefix="algan_region_smoke_"))
    rows = sweep_sets(args.sets, args.work, args.smoke, data_sets,
                      lambda name, root, layout: run_set(name, root, layout, heads, size, args.cache, args.max_test,
                                                         args.max_train, args.smoke))
    return finish(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
