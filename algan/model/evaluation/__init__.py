"""Evaluation of a fitted detector: image-level and pixel-level metrics, patch-head comparison, thresholds."""
