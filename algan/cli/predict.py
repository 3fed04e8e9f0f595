"""``algan-predict MODEL_DIR INPUT [--out DIR] [--roi x,y,w,h]``: score an image, a folder or a video offline.

Uses the exported graph through :class:`algan.inference.Inferencer` (ONNX Runtime; no torch). Writes
``DIR/predictions.csv`` (one row per image or video frame: file, score, decision, region box and peak, mask area,
class), ``DIR/overlays/`` (the heat map blended over the frame's ROI, the defect mask's contours outlined), with
``--save-masks`` ``DIR/masks/`` (the predicted defect masks as PNG) and the self-contained ``DIR/report.html``
(:mod:`algan.report`). Folders are searched recursively; MTD masks (a ``.png`` beside a ``.jpg``
of the same name) and MVTec ``ground_truth`` folders are skipped, and the folder names give the per-class counts
(``good``/``MT_Free``/``normal``/``ok`` = normal). A video's ``<stem>.labels.json`` (from ``algan-synth --video``)
labels its frames.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from algan.cli._common import run_cli, setup_logging
from algan.contract import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mkv", ".mp4", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
#: class (folder) names that mean "normal" (case-insensitive)
NORMAL_CLASSES = {"good", "mt_free", "normal", "ok", "free", "pass"}
CSV_FIELDS = ["file", "score", "decision", "box_x", "box_y", "box_w", "box_h", "peak_x", "peak_y", "mask_area",
              "class"]


@dataclass(frozen=True)
class InputItem:
    """One thing to score: its name in the outputs, a loader for its pixels and its class (or ``None``)."""

    name: str
    path: Path | None
    label: str | None


def image_class(rel: Path) -> str | None:
    """Class of an image from its path relative to the input folder: the folder holding it (its parent when that
    folder is MTD's ``Imgs``), ``None`` for a file directly in the input folder."""
    parts = rel.parts[:-1]
    if parts and parts[-1].lower() == "imgs":
        parts = parts[:-1]
    return parts[-1] if parts else None


def list_images(folder: Path, skip: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), without MTD masks, MVTec ``ground_truth`` and ``skip``."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        rel = p.relative_to(folder)
        if any(part.lower() == "ground_truth" for part in rel.parts[:-1]):
            continue
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.suffix.lower() == ".png" and any(p.with_suffix(s).is_file() for s in (".jpg", ".jpeg")):
            continue  # MTD: the .png beside a .jpg is its mask
        out.append(p)
    return out


def is_normal(label: str | None) -> bool | None:
    return None if label is None else label.lower() in NORMAL_CLASSES


def folder_items(folder: Path, skip: Path | None) -> list[InputItem]:
    files = list_images(folder, skip)
    if not files:
        raise ValueError(f"no image files ({' '.join(sorted(IMAGE_SUFFIXES))}) under {folder}; give an image, a "
                         "folder of images or a video")
    rels = [p.relative_to(folder) for p in files]
    classes = [image_class(r) for r in rels]
    labelled = len({c for c in classes if c is not None}) >= 2
    return [InputItem(r.as_posix(), p, c if labelled else None) for p, r, c in zip(files, rels, classes, strict=True)]


def video_frames(path: Path) -> Iterator[tuple[str, np.ndarray, str | None]]:
    """``(name, frame, class)`` for each decodable frame of a video (class from ``<stem>.labels.json``)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: not a video OpenCV/FFmpeg decodes")
    labels: dict[int, str] = {}
    lp = path.with_name(path.stem + ".labels.json")
    if lp.is_file():
        try:
            labels = {int(r["frame"]): str(r["class"]) for r in json.loads(lp.read_text(encoding="utf-8"))}
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("cannot read the frame labels %s; frames are unlabelled", lp)
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield f"{path.name}#{i}", frame, labels.get(i)
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise ValueError(f"video {path} has no decodable frames")


def _progress(total: int | None, desc: str):  # noqa: ANN202
    """A tqdm bar on a terminal (stderr), else ``None`` (no carriage returns in logs)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def output_name(name: str, suffix: str) -> str:
    """The file an image's overlay (``.jpg``) or mask (``.png``) is written to, relative to its folder: the input's
    name (relative path, ``video.mkv#12`` for a frame) with ``#`` as ``_`` and ``suffix`` appended."""
    return name.replace("#", "_") + suffix


def frame_mask(frame_shape: tuple[int, ...], roi: tuple[int, int, int, int] | None,
               mask: np.ndarray | None) -> np.ndarray:
    """A frame-sized uint8 mask ``(H, W)``: the ROI-sized ``mask`` placed at the ROI (255 = defect), zeros elsewhere
    and everywhere when ``mask`` is ``None`` (a frame below the threshold)."""
    out = np.zeros(frame_shape[:2], np.uint8)
    if mask is not None and roi is not None:
        x, y, w, h = roi
        out[y : y + h, x : x + w] = mask
    return out


def predict(model: str | Path, input_path: str | Path, out: str | Path, roi: str | None = None,
            batch_size: int = 8, threshold: float = 1.0, overlays: bool = True, save_masks: bool = False) -> dict:
    """Score ``input_path`` with the exported ``model`` and write CSV, overlays, masks and report into ``out``.

    With ``save_masks`` every scored image gets ``out/masks/<name>.png`` (:func:`output_name`): uint8, the frame's
    size, 255 on the predicted defect mask (frames at or above the threshold), 0 elsewhere; a frame below the
    threshold gets an all-zero mask.

    Returns:
        Summary: ``{"n": images, "anomalous": count, "csv": path, "report": path, "overlays": dir, "masks": dir}``.

    Raises:
        ValueError: an input that is no image, folder or video; a bad ROI; an unreadable image (its row says
            ``unreadable`` instead; only a folder with nothing readable raises).
        ModelError: no exported model in ``model``.
        ValueError: ``save_masks`` with a model without anomaly maps.
    """
    from algan.inference import Inferencer
    from algan.report import ReportItem, write_report

    src, out = Path(input_path), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist; give an image, a folder of images or a video")
    inf = Inferencer(model, roi=roi, threshold=threshold, batch_size=batch_size)
    if save_masks and not inf.has_maps:
        inf.close()
        raise ValueError(f"--save-masks needs a model with anomaly maps; {model} scores whole images (train a patch "
                         "head: algan-train --variant patch)")
    if src.is_dir():
        items = folder_items(src, out.resolve() if out.resolve() != src.resolve() else None)
        total: int | None = len(items)
        stream = ((it.name, it.path, it.label) for it in items)
    elif src.suffix.lower() in IMAGE_SUFFIXES:
        total, stream = 1, iter([(src.name, src, None)])
    elif src.suffix.lower() in VIDEO_SUFFIXES:
        total, stream = int(cv2.VideoCapture(str(src)).get(cv2.CAP_PROP_FRAME_COUNT)) or None, video_frames(src)
    else:
        raise ValueError(f"input {src} is not an image ({' '.join(sorted(IMAGE_SUFFIXES))}), a video "
                         f"({' '.join(sorted(VIDEO_SUFFIXES))}) or a folder")
    out.mkdir(parents=True, exist_ok=True)
    ov_dir = out / "overlays"
    mask_dir = out / "masks"
    report_items: list[ReportItem] = []
    rows: list[dict] = []
    bar = _progress(total, "algan-predict")
    pending: list[tuple[str, np.ndarray, str | None]] = []

    def flush() -> None:
        preds = inf.predict_many([f for _, f, _ in pending])
        for (name, frame, label), p in zip(pending, preds, strict=True):
            box = p.region.box if p.region is not None else (None,) * 4
            peak = p.region.peak if p.region is not None else (None, None)
            decision = "anomalous" if p.is_anomalous else "normal"
            area = int(np.count_nonzero(p.mask)) if p.mask is not None else None
            rows.append(dict(zip(CSV_FIELDS, [name, f"{p.score:.6f}", decision, *box, *peak, area, label or ""],
                                 strict=True)))
            image = inf.overlay(frame, p)
            if overlays:
                target = ov_dir / output_name(name, ".jpg")
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            full_mask = frame_mask(frame.shape, p.roi, p.mask) if p.mask is not None else None
            if save_masks:
                target = mask_dir / output_name(name, ".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), full_mask if full_mask is not None else frame_mask(frame.shape,
                                                                                                    None, None)):
                    raise OSError(f"cannot write {target}")
            report_items.append(ReportItem(name, p.score, p.is_anomalous, label, is_normal(label), image,
                                           list(p.region.box) if p.region is not None else None, full_mask))
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    unreadable = 0
    try:
        for name, ref, label in stream:
            frame = ref if isinstance(ref, np.ndarray) else cv2.imread(str(ref), cv2.IMREAD_COLOR)
            if frame is None:
                if pending:
                    flush()  # rows stay in input order
                unreadable += 1
                log.warning("cannot read image %s; skipped (listed as unreadable in the CSV)", ref)
                rows.append(dict(zip(CSV_FIELDS, [name, "", "unreadable", *[""] * 7, label or ""], strict=True)))
                continue
            pending.append((name, frame, label))
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    finally:
        if bar is not None:
            bar.close()
    if not report_items:
        raise ValueError(f"none of the {unreadable} images under {src} could be read")
    csv_path = out / "predictions.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    report = write_report(out / "report.html", report_items, inf.threshold, title=f"algan-predict: {src.name}",
                          model=f"{Path(model)} ({inf.model_id})", source=str(src))
    n_anom = sum(1 for i in report_items if i.anomalous)
    inf.close()
    return {"n": len(report_items), "anomalous": n_anom, "unreadable": unreadable, "csv": str(csv_path),
            "report": str(report), "overlays": str(ov_dir) if overlays else None,
            "masks": str(mask_dir) if save_masks else None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan-predict", description="Score an image, a folder of images or a video "
                                "with an exported model (no torch): CSV, overlay images and an HTML report.")
    p.add_argument("model", metavar="MODEL_DIR", help="model bundle exported with algan-export (model.onnx)")
    p.add_argument("input", metavar="INPUT", help="an image, a folder of images (searched recursively) or a video")
    p.add_argument("--out", default="predictions", metavar="DIR", help="output directory (default: predictions)")
    p.add_argument("--roi", default=None, metavar="x,y,w,h",
                   help="crop in frame pixels before resizing (default: the bundle's ROI; 'full' = whole frame)")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="decision threshold on the calibrated score (default 1.0 = the calibrated threshold)")
    p.add_argument("--batch", type=int, default=8, help="frames per model run (default 8)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay images (the report keeps them)")
    p.add_argument("--save-masks", action="store_true",
                   help="write each image's predicted defect mask to DIR/masks/<name>.png (frame-sized, 255 = defect; "
                   "all zero below the threshold); needs a model with anomaly maps")
    p.add_argument("--log-level", default="WARNING")
    return p


def _main(args: argparse.Namespace) -> int:
    from algan.edge.errors import EdgeError

    try:
        res = predict(args.model, args.input, args.out, args.roi, args.batch, args.threshold, not args.no_overlays,
                      args.save_masks)
    except EdgeError as e:
        print(f"algan-predict: error: {e}", file=sys.stderr)
        return 2
    print(f"scored {res['n']} images: {res['anomalous']} anomalous; {res['csv']}; report {res['report']}"
          + (f"; masks in {res['masks']}" if res["masks"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-predict", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
