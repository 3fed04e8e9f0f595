"""The calibration report: a PNG (matplotlib, Agg backend) and a printed table.

Figure panels (all scores on the calibrated scale, 0 = median normal, 1.0 = alarm threshold):

1. score histograms of calibration normals, validation normals and labelled anomalies, with the chosen, F1-max and
   Youden thresholds;
2. the ROC curve (validation normals vs anomalies) with the three thresholds marked;
3. the normal-score tail: empirical per-frame exceedance rate ``P(score >= x)`` on a log axis, the target rate,
   and the generalised Pareto fit when it set the threshold.
"""

from __future__ import annotations

import io

import numpy as np

from algan.calibration.pipeline import METHOD_NAMES, CalibrationResult, ThresholdRow

COLOURS = {"calib": "#4C72B0", "valid": "#55A868", "anom": "#C44E52", "chosen": "black", "F1-max": "#DD8452",
           "Youden J": "#8172B3"}


def _style(row: ThresholdRow, i: int) -> dict:
    if i == 0:
        return {"color": COLOURS["chosen"], "ls": "-", "lw": 2}
    return {"color": COLOURS.get(row.name, "grey"), "ls": "--", "lw": 1.5}


def render_png(result: CalibrationResult, title: str = "", dpi: int = 110) -> bytes:
    """The report figure as PNG bytes (nothing is written here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5.2), dpi=dpi, layout="constrained")
    ax_h, ax_r, ax_t = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1, 1]})
    cal = result.calibrated(result.calib_scores)
    val = result.calibrated(result.valid_scores)
    anom = result.calibrated(result.anomaly_scores)
    rows = result.rows

    # 1. histograms: clip the long anomalous tail into the last bin so the normal bulk stays readable
    every = np.concatenate([cal, val, anom])
    hi = float(max(1.5, np.quantile(every, 0.98), *(r.calibrated * 1.15 for r in rows)))
    lo = float(min(every.min(), 0.0))
    lo -= 0.03 * (hi - lo)
    bins = np.linspace(lo, hi, 50)
    for data, key, label in ((cal, "calib", "calibration normals"), (val, "valid", "validation normals"),
                             (anom, "anom", "anomalies")):
        if len(data):
            ax_h.hist(np.clip(data, lo, hi), bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                      color=COLOURS[key], edgecolor=COLOURS[key], label=f"{label} (n={len(data)})")
    for i, r in enumerate(rows):
        label = f"{r.name}: {r.calibrated:.2f}" + (f", recall {r.recall:.2f}" if r.recall is not None else "")
        ax_h.axvline(r.calibrated, label=label, **_style(r, i))
    ax_h.set_xlabel(f"calibrated score (1.0 = alarm threshold; values > {hi:.3g} shown in the last bin)")
    ax_h.set_ylabel("density")
    ax_h.set_title("Score distributions")
    ax_h.legend(fontsize=8, loc="upper right")

    # 2. ROC
    normals = val if len(val) else cal
    if len(anom):
        from sklearn.metrics import roc_auc_score, roc_curve

        y = np.r_[np.zeros(len(normals)), np.ones(len(anom))]
        s = np.r_[normals, anom]
        fpr, tpr, _ = roc_curve(y, s)
        ax_r.plot(fpr, tpr, color=COLOURS["anom"], lw=2, label=f"ROC (AUROC {roc_auc_score(y, s):.3f})")
        ax_r.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for i, r in enumerate(rows):
            st = _style(r, i)
            ax_r.plot([r.fpr], [r.recall], "osD"[i % 3], ms=11 - 2.5 * i, color=st["color"], ls="none",
                      label=f"{r.name}: FPR {r.fpr:.3g}, recall {r.recall:.2f}")
        ax_r.set_xlim(-0.01, 1.01)
        ax_r.set_ylim(-0.01, 1.01)
        ax_r.legend(fontsize=8, loc="lower right")
    else:
        ax_r.text(0.5, 0.5, "no labelled anomalies\n(pass --anomalies DIR)", ha="center", va="center",
                  transform=ax_r.transAxes, fontsize=11, color="grey")
    ax_r.set_xlabel(f"false-alarm rate per frame ({result.eval_set})")
    ax_r.set_ylabel("recall (anomalies detected)")
    ax_r.set_title("ROC")
    ax_r.grid(alpha=0.3)

    # 3. normal-score tail on a log scale
    for data, key, label in ((cal, "calib", "calibration normals"), (val, "valid", "validation normals")):
        if len(data):
            xs = np.sort(data)
            ax_t.plot(xs, 1.0 - np.arange(len(xs)) / len(xs), drawstyle="steps-post", marker=".", ms=3,
                      color=COLOURS[key], label=label)
    est = result.estimator
    if est.method_ == "gpd":
        g = est.estimator_
        xr = np.linspace(g.tail_threshold_, max(est.threshold_ * 1.3, g.tail_threshold_ + 1e-9), 200)
        ax_t.plot(result.calibrated(xr), g.tail_probability(xr), color="black", ls=":", label="generalised Pareto fit")
    ax_t.axhline(result.target_fpr, color="grey", ls="--", lw=1, label=f"target FPR {result.target_fpr:g}")
    ax_t.axvline(1.0, **_style(rows[0], 0), label="chosen threshold (1.0)")
    ax_t.set_yscale("log")
    floor = min(result.target_fpr, 1.0 / max(len(cal), 1)) / 3
    ax_t.set_ylim(floor, 1.05)
    ax_t.set_xlabel("calibrated score")
    ax_t.set_ylabel("per-frame exceedance rate P(score >= x)")
    ax_t.set_title(f"Normal tail ({METHOD_NAMES[est.method_]})")
    ax_t.grid(alpha=0.3, which="both")
    ax_t.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def format_table(result: CalibrationResult) -> str:
    """The thresholds as a fixed-width text table (rates per frame on ``result.eval_set``)."""
    head = (f"{'threshold':<18} {'raw':>11} {'calibr.':>8} {'FPR/frame':>10} {'95% CI':>17} "
            f"{'alarms/cam-h':>13} {'recall':>7} {'F1':>6}")
    lines = [f"thresholds (FPR and recall on {result.eval_set}, {result.fps:g} fps):", head, "-" * len(head)]
    for r in result.rows:
        rec = f"{r.recall:.3f}" if r.recall is not None else "-"
        f1 = f"{r.f1:.3f}" if r.f1 is not None else "-"
        ci = f"[{r.fpr_low:.4f}, {r.fpr_high:.4f}]"
        lines.append(f"{r.name:<18} {r.raw:>11.5g} {r.calibrated:>8.3f} {r.fpr:>10.4f} {ci:>17} "
                     f"{r.alarms_per_hour(result.fps):>13,.0f} {rec:>7} {f1:>6}")
    return "\n".join(lines)
