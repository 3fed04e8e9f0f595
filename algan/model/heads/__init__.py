"""Scoring heads: the vector and patch head modules and the registry of head kinds (fit, load, settings)."""
