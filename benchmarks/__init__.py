"""Benchmarks (not tests). Each ``benchmarks/<name>.py`` (not ``_*.py``) is importable code with a
``main(argv) -> int`` that prints its figures, one ``label  value`` line each, and takes:

- ``--smoke``: a size that runs in seconds (stand-in model, synthetic input); ``tests/test_benchmarks_smoke.py``
  discovers and runs every benchmark at this size in CI and requires exit 0 and printed figures; exit status 77
  means "cannot run on this machine" (no GPU, no TensorRT) and the test skips with the printed reason;
- no flag: the full size whose figures go into ``benchmarks/RESULTS.md`` (``make bench`` runs them all).

Run them from the repository root as ``python -m benchmarks.<name>`` (or ``PYTHONPATH=. python benchmarks/<name>.py``).
Shared helpers (a broker, a subscriber, a stand-in model, a synthetic video) are in :mod:`benchmarks._kit`; nothing
here imports from ``tests/``.
"""
