"""Score calibration: alarm thresholds with a stated false-alarm rate, drift checks and INT8 calibration sets.

Modules:
    (the threshold estimators -- empirical quantile, generalised Pareto tail, F1-max, Youden -- are
    :mod:`algan.model.evaluation.threshold`: training's head selection uses them too)
    drift: two-sample KS drift test and the false-alarm rate of the current threshold (Clopper-Pearson).
    scoring: raw scores of image files through a bundle's detector (unreadable images skipped and counted).
    int8: the INT8 calibration set contract (``int8_calibration.safetensors``).
    store: the drift reference (``calibration_scores.safetensors``) and the all-or-nothing bundle update.
    pipeline: the data protocol and the calibrate / check steps behind ``algan-calibrate``.
    report: the PNG report and the printed table.

Scores: higher = more anomalous; a frame alarms when ``score >= threshold``; calibrated score =
``(raw - center) / (threshold - center)`` (1.0 = alarm threshold). Rates are per frame.
"""
