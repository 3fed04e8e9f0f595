"""algan-edge: visual anomaly detection for production lines (ALGAN, Murase & Fukumizu, IEEE Access 2022)."""

__version__ = "0.1.0"
