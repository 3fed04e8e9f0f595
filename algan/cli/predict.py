"""``algan-predict MODEL_DIR INPUT [--out DIR] [--roi x,y,w,h]``: score an image, a folder or a video offline.

Uses the exported graph through :class:`algan.runtime.inference.Inferencer` (ONNX Runtime; no torch). Writes
``DIR/predictions.csv`` (one row per image or video frame: file, score, decision, region box and peak, mask area,
class), ``DIR/overlays/`` (the heat map blended over the frame's ROI, the defect mask's contours outlined), with
``--save-masks`` ``DIR/masks/`` (the predicted defect masks as PNG, named as the overlays) and the self-contained
``DIR/report.html`` (:mod:`algan.report`). Folders are searched recursively; files that are not images of the set
(masks: ``*_mask.png`` and MTD's ``.png`` beside a ``.jpg`` of the same name; hidden files;
:func:`algan.contract.image_skip_reason`) and MVTec ``ground_truth`` folders are skipped and counted, and the
folder names give the per-class counts (``good``/``MT_Free``/``normal``/``ok`` = normal). A video's
``<stem>.labels.json`` (from ``algan-synth --video``) labels its frames.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from algan.cli._common import DeprecatedFlag, add_quiet, add_version, run_cli, setup_logging
from algan.contract import IMAGE_SUFFIXES, ImageListing
from algan.contract import list_images as contract_list_images

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


def list_images(folder: Path, skip: Path | None = None) -> ImageListing:
    """Images of the set under ``folder`` (recursive; sorted by folder, then name) by the one rule of
    :func:`algan.contract.image_skip_reason` (no masks, hidden files or other suffixes), without MVTec
    ``ground_truth`` folders, hidden folders and ``skip`` (the output folder)."""
    out = ImageListing([], {})
    for dirpath, dirnames, _ in os.walk(folder):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n.lower() != "ground_truth"
                             and (skip is None or (d / n).resolve() != skip))
        out.extend(contract_list_images(d))
    out.images.sort(key=lambda p: p.relative_to(folder).parts)
    return out


def is_normal(label: str | None) -> bool | None:
    return None if label is None else label.lower() in NORMAL_CLASSES


def folder_items(folder: Path, skip: Path | None) -> list[InputItem]:
    listing = list_images(folder, skip)
    files = listing.images
    if (line := listing.skipped_line()) is not None:
        print(f"algan-predict: {folder}: {line}", file=sys.stderr)
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
    """A tqdm bar on a terminal (stderr), else progress lines for a log (:class:`algan.progress.LogProgress`: at the
    start, then at least every 30 s with count, total and ETA; no carriage returns); nothing for one image."""
    if total == 1:
        return None
    if not sys.stderr.isatty():
        from algan.progress import LogProgress

        return LogProgress("scoring", total, "img", prog=desc)
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


#: what algan-predict writes into --out; a directory holding anything else is not replaced into
PREDICT_OUTPUTS = ("predictions.csv", "report.html", "overlays", "masks")


def check_predict_out(out: Path) -> None:
    """Refuse an ``--out`` that holds files algan-predict did not write (its CSV and report would overwrite a user's
    files of the same name).

    Raises:
        OutputDirError: ``out`` is a file, or a non-empty directory with other entries than :data:`PREDICT_OUTPUTS`.
    """
    from algan.contract import OutputDirError

    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a directory; choose a new directory name")
    if out.is_dir():
        other = sorted(set(p.name for p in out.iterdir()) - set(PREDICT_OUTPUTS))
        if other:
            raise OutputDirError(f"--out {out} holds files that algan-predict did not write ({', '.join(other[:3])}"
                                 f"{f' +{len(other) - 3} more' if len(other) > 3 else ''}); nothing was written: "
                                 "choose a new or empty directory, or an earlier algan-predict output")


def overlay_name(name: str, used: set[str]) -> str:
    """Relative path of an item's overlay JPEG: the image's own name with ``.jpg`` (``good/f000.png`` ->
    ``good/f000.jpg``), a video frame's ``<stem>_<frame>.jpg`` (``clip.mp4#12`` -> ``clip_12.jpg``); when two inputs
    would share a name (``a.png`` and ``a.jpg``) the later keeps its suffix (``a_png.jpg``). Records the name in
    ``used``."""
    path = PurePosixPath(name.split("#")[0])
    frame = name.partition("#")[2]
    stem = f"{path.stem}_{frame}" if frame else path.stem
    out = str(path.with_name(f"{stem}.jpg"))
    if out in used:
        out = str(path.with_name(f"{stem}_{path.suffix.lstrip('.').lower()}.jpg"))
        i = 2
        while out in used:
            out = str(path.with_name(f"{stem}_{path.suffix.lstrip('.').lower()}_{i}.jpg"))
            i += 1
    used.add(out)
    return out


def check_model_arg(model: Path, src: Path) -> None:
    """Say the true cause when ``MODEL_DIR`` is not an exported bundle, before any model file is opened: swapped
    arguments, a folder that is no bundle, a bundle not exported yet (an ONNX file given directly is accepted).

    Raises:
        ValueError: one line with the cause and the fix.
    """
    from algan.contract import MANIFEST_FILE, ONNX_FILE

    if not model.exists():
        raise FileNotFoundError(f"model bundle {model} does not exist; give the directory algan-train --out wrote "
                                "(usage: algan-predict MODEL_DIR INPUT)")
    swapped = (src.is_dir() and (src / MANIFEST_FILE).is_file())
    if model.is_file():
        if model.suffix.lower() == ".onnx":
            return
        if swapped or model.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            example = f", e.g. algan-predict {src} {model}" if swapped else ""
            raise ValueError(f"{model} is an image or video, not a model bundle: the model comes first "
                             f"(usage: algan-predict MODEL_DIR INPUT{example})")
        raise ValueError(f"{model} is a file, not a model bundle; give the directory algan-train --out wrote")
    if not (model / MANIFEST_FILE).is_file():
        hint = f"; the arguments look swapped: algan-predict {src} {model}" if swapped else ""
        raise ValueError(f"{model} is not a model bundle (no {MANIFEST_FILE}); give the directory algan-train --out "
                         f"wrote{hint}")
    if not (model / ONNX_FILE).is_file():
        raise ValueError(f"model bundle {model} has no {ONNX_FILE} yet; export it first: algan-export {model}")


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
            batch_size: int = 8, threshold: float = 1.0, overlays: bool = True, save_masks: bool = False,
            progress: bool = True) -> dict:
    """Score ``input_path`` with the exported ``model`` and write CSV, overlays, masks and report into ``out``
    (``progress``: a bar or log lines while scoring more than one image; ``-q`` turns it off).

    With ``save_masks`` every scored image gets ``out/masks/<name>.png`` (named as its overlay,
    :func:`overlay_name`, with ``.png``): uint8, the frame's size, 255 on the predicted defect mask (frames at or
    above the threshold), 0 elsewhere; a frame below the threshold gets an all-zero mask.

    Returns:
        Summary: ``{"n": images, "anomalous": count, "csv": path, "report": path, "overlays": dir, "masks": dir}``.

    Raises:
        ValueError: an input that is no image, folder or video; a bad ROI; an unreadable image (its row says
            ``unreadable`` instead; only a folder with nothing readable raises).
        ModelError: no exported model in ``model``.
        ValueError: ``save_masks`` with a model without anomaly maps.
    """
    from algan.report import ReportItem, write_report
    from algan.runtime.inference import Inferencer

    src, out = Path(input_path), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist; give an image, a folder of images or a video")
    check_predict_out(out)  # first: a user's files in --out are named whatever else is wrong
    check_model_arg(Path(model), src)
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
    bar = _progress(total, "algan-predict") if progress else None
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
            rel = overlay_name(name, used_names)
            if overlays:
                target = ov_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            full_mask = frame_mask(frame.shape, p.roi, p.mask) if p.mask is not None else None
            if save_masks:
                target = (mask_dir / rel).with_suffix(".png")
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
    used_names: set[str] = set()
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
    p.add_argument("--batch-size", type=int, default=8, help="frames per model run (default 8)")
    p.add_argument("--batch", dest="batch_size", type=int, action=DeprecatedFlag, new="--batch-size")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay images (the report keeps them)")
    p.add_argument("--save-masks", action="store_true",
                   help="write each image's predicted defect mask to DIR/masks/<name>.png (frame-sized, 255 = defect; "
                   "all zero below the threshold); needs a model with anomaly maps")
    p.add_argument("--log-level", default="WARNING")
    add_quiet(p, "no summary line (the files under --out are the output); warnings and errors still print")
    return add_version(p)


def _main(args: argparse.Namespace) -> int:
    from algan.runtime.errors import EdgeError

    try:
        res = predict(args.model, args.input, args.out, args.roi, args.batch_size, args.threshold, not args.no_overlays,
                      args.save_masks, progress=not args.quiet)
    except EdgeError as e:
        print(f"algan-predict: error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        return 0
    print(f"scored {res['n']} images: {res['anomalous']} anomalous; {res['csv']}; report {res['report']}"
          + (f"; masks in {res['masks']}" if res["masks"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-predict", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
