"""One self-contained HTML report of scored images (``algan-predict``): opens offline, no external file.

Contents: the model and threshold, counts (per class when the inputs carry labels), a score histogram with the
threshold line (inline SVG), and a grid of overlay thumbnails (inline base64 JPEG) sorted by score, highest first,
with a divider where the scores cross the threshold; an image with a predicted defect mask shows the mask (white =
defect, frame-sized) beside its overlay, with its area in pixels. The page is a Jinja2 template (:data:`TEMPLATE`,
autoescaped).
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: longest side of a thumbnail (pixels)
THUMB_PX = 220
#: longest side of a mask thumbnail (pixels)
MASK_THUMB_PX = 110
#: most thumbnails written into one report (the highest scores; the CSV has every row)
MAX_THUMBS = 1000


@dataclass(frozen=True)
class ReportItem:
    """One scored image.

    Attributes:
        name: file name (relative to the input), or ``video.mkv#12`` for a video frame.
        score: calibrated score (1.0 = threshold).
        anomalous: decision (score >= threshold).
        label: class name from the input layout (e.g. ``good``, ``MT_Crack``), or ``None``.
        normal_label: True/False when the class says normal/defective, ``None`` without a label.
        thumbnail: uint8 BGR overlay image (any size; shrunk here), or ``None``.
        region: ``[x, y, w, h]`` in frame pixels, or ``None``.
        mask: uint8 ``(H, W)`` predicted defect mask in frame pixels (non-zero = defect), or ``None`` (no mask: a
            score-only model, or a frame below the threshold).
    """

    name: str
    score: float
    anomalous: bool
    label: str | None = None
    normal_label: bool | None = None
    thumbnail: np.ndarray | None = None
    region: Sequence[int] | None = None
    mask: np.ndarray | None = None


def thumb_data_uri(image: np.ndarray, px: int = THUMB_PX, quality: int = 80) -> str:
    """``data:image/jpeg;base64,...`` of ``image`` shrunk so that its longest side is at most ``px``."""
    h, w = image.shape[:2]
    s = min(1.0, px / max(h, w))
    if s < 1.0:
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _histogram_svg(items: Sequence[ReportItem], threshold: float, width: int = 760, height: int = 180) -> str:
    """Inline SVG: score histogram (stacked by labelled normal / defective / unlabelled) with the threshold line."""
    scores = np.array([i.score for i in items if math.isfinite(i.score)], dtype=np.float64)
    if scores.size == 0:
        return ""
    lo = min(0.0, float(scores.min()))
    hi = max(threshold * 1.5, float(np.quantile(scores, 0.99)) * 1.05, lo + 1e-6)
    bins = 40
    edges = np.linspace(lo, hi, bins + 1)
    groups = (("normal", "#4c9f70", True), ("defective", "#d1495b", False), ("unlabelled", "#5b7db1", None))
    counts = {}
    for key, _, flag in groups:
        vals = np.clip([i.score for i in items if i.normal_label is flag and math.isfinite(i.score)], lo, hi)
        counts[key] = np.histogram(vals, edges)[0] if len(vals) else np.zeros(bins, int)
    top = max(1, int(sum(counts.values()).max()))
    pad, bw = 30, (width - 40) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + pad}" role="img" '
             'aria-label="score histogram">']
    for b in range(bins):
        y = height
        for key, colour, _ in groups:
            c = int(counts[key][b])
            if c:
                hgt = c / top * (height - 10)
                y -= hgt
                tip = f"{key}: {c} in [{edges[b]:.2f}, {edges[b + 1]:.2f})"
                parts.append(f'<rect x="{20 + b * bw:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" height="{hgt:.1f}" '
                             f'fill="{colour}"><title>{tip}</title></rect>')
    tx = 20 + (threshold - lo) / (hi - lo) * (width - 40)
    parts.append(f'<line x1="{tx:.1f}" y1="0" x2="{tx:.1f}" y2="{height}" stroke="#222" stroke-width="2" '
                 'stroke-dasharray="6,3"/>')
    parts.append(f'<text x="{tx + 4:.1f}" y="14" font-size="12">threshold {threshold:g}</text>')
    for v in np.linspace(lo, hi, 6):
        x = 20 + (v - lo) / (hi - lo) * (width - 40)
        parts.append(f'<text x="{x:.1f}" y="{height + 18}" font-size="11" text-anchor="middle">{v:.2f}</text>')
    legend = " ".join(f'<tspan fill="{c}">&#9632; {k}</tspan>' for k, c, f in groups
                      if counts[k].sum() or (f is None and not any(i.label for i in items)))
    parts.append(f'<text x="{width - 20}" y="14" font-size="12" text-anchor="end">{legend}</text></svg>')
    return "".join(parts)


def _class_rows(items: Sequence[ReportItem]) -> list[dict]:
    """Per labelled class: name, kind (normal/defective), images, flagged anomalous, share decided right."""
    labelled = [i for i in items if i.label is not None]
    total: Counter = Counter(i.label for i in labelled)
    flagged: Counter = Counter(i.label for i in labelled if i.anomalous)
    normal = {i.label: i.normal_label for i in labelled}
    rows = []
    for cls in sorted(total, key=lambda c: (not normal[c], c)):
        n, k = total[cls], flagged[cls]
        rows.append({"name": cls, "kind": "normal" if normal[cls] else "defective", "n": n, "flagged": k,
                     "right": (n - k if normal[cls] else k) / n})
    return rows


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:18px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .meta{color:#555;font-size:13px;margin-bottom:12px}
table.cls{border-collapse:collapse;margin:10px 0;font-size:13px} table.cls td,table.cls th{border:1px solid #ccc;
padding:3px 8px;text-align:right} table.cls td:first-child,table.cls th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px} .card{width:232px;background:#fff;border:1px solid #ddd;
border-radius:4px;padding:5px;font-size:12px} .card img{max-width:220px;max-height:220px;display:block;margin:auto}
.card img.mask{max-width:110px;max-height:110px;margin-top:3px;border:1px solid #999}
.card.anom{border-color:#d1495b;box-shadow:0 0 0 1px #d1495b} .name{word-break:break-all;color:#444}
.score{font-weight:600} .anom .score{color:#b3202f} .ok .score{color:#2f7a4f}
.divider{width:100%;border-top:2px dashed #222;margin:6px 0;padding-top:3px;font-size:13px;font-weight:600}
.badge{display:inline-block;padding:0 4px;border-radius:3px;background:#eee;margin-left:4px}
"""


#: the report page (Jinja2, autoescaped: file names and labels are escaped; the SVG and data URIs are marked safe)
TEMPLATE = """<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{{ title }}</title>
<style>{{ css }}</style></head><body><h1>{{ title }}</h1>
<div class='meta'>model {{ model }} &middot; input {{ source }} &middot; {{ ranked|length }} images,
{{ n_anom }} anomalous at threshold {{ '%g'|format(threshold) }} (calibrated score; 1.0 = the calibrated alarm
threshold)</div>
{% if classes %}<table class='cls'><tr><th>class</th><th>kind</th><th>images</th><th>flagged anomalous</th>
<th>decided right</th></tr>{% for c in classes %}<tr><td>{{ c.name }}</td><td>{{ c.kind }}</td><td>{{ c.n }}</td><td>{{
c.flagged }}</td><td>{{ '%.1f%%'|format(100 * c.right) }}</td></tr>{% endfor %}</table>{% endif %}
{{ histogram }}
<div class='grid'>{% for card in cards %}{% if card.divider %}<div class='divider'>{{ card.divider }}</div>
{% else %}<div class='card {{ 'anom' if card.item.anomalous else 'ok' }}'>{% if card.thumb %}<img src='{{ card.thumb }}'
alt='{{ card.item.name }}'>{% endif %}{% if card.mask_thumb %}<img class='mask' src='{{ card.mask_thumb }}'
alt='defect mask of {{ card.item.name }}' title='predicted defect mask ({{ card.mask_area }} px)'>{% endif %}<div
class='name'>{{ card.item.name }}{% if card.item.label %}<span
class='badge'>{{ card.item.label }}</span>{% endif %}</div><span class='score'>
{{- '%.3f'|format(card.item.score) }}</span> {{ 'anomalous' if card.item.anomalous else 'normal' }}
{%- if card.item.region is not none %}<br>region
{{ card.item.region|list }}{% endif %}{% if card.mask_area is not none %}, mask {{ card.mask_area }} px{% endif %}</div>
{%- endif %}{% endfor %}</div>
{% if more %}<p class='meta'>{{ more }} lower-scored images without thumbnails (see predictions.csv)</p>{% endif %}
</body></html>
"""


def write_report(path: str | Path, items: Sequence[ReportItem], threshold: float = 1.0, title: str = "algan-predict",
                 model: str = "", source: str = "", max_thumbs: int = MAX_THUMBS) -> Path:
    """Write the report.

    Args:
        path: the ``.html`` file (parent directories are created).
        items: scored images in any order (sorted here by score, highest first).
        threshold: decision threshold (calibrated units), drawn as a line and as a divider in the grid.
        title, model, source: shown in the header.
        max_thumbs: thumbnails of at most this many images (the highest scores).

    Returns:
        The path written.
    """
    from jinja2 import Environment
    from markupsafe import Markup

    path = Path(path)
    ranked = sorted(items, key=lambda i: (-(i.score if math.isfinite(i.score) else -math.inf), i.name))
    n_anom = sum(1 for i in ranked if i.anomalous)
    cards: list[dict] = []
    divided = False
    for item in ranked[:max_thumbs]:
        if not divided and not item.anomalous:
            cards.append({"divider": f"threshold {threshold:g}: {n_anom} above, {len(ranked) - n_anom} below"})
            divided = True
        thumb = thumb_data_uri(item.thumbnail) if item.thumbnail is not None else ""
        mask_thumb, area = "", None
        if item.mask is not None:
            area = int(np.count_nonzero(item.mask))
            u8 = np.where(np.asarray(item.mask) > 0, 255, 0).astype(np.uint8)
            mask_thumb = thumb_data_uri(cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR), MASK_THUMB_PX)
        cards.append({"item": item, "thumb": Markup(thumb), "mask_thumb": Markup(mask_thumb), "mask_area": area})
    if not divided:
        cards.append({"divider": f"threshold {threshold:g}: all {n_anom} above"})
    page = Environment(autoescape=True).from_string(TEMPLATE).render(
        title=title, css=Markup(CSS), model=model, source=source, ranked=ranked, n_anom=n_anom, threshold=threshold,
        classes=_class_rows(ranked), histogram=Markup(_histogram_svg(ranked, threshold)), cards=cards,
        more=max(0, len(ranked) - max_thumbs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
