"""Shared CLI plumbing: logging set-up, one-line errors instead of tracebacks, ``--version`` and the old flag
spellings that keep working for one release with a deprecation line.

The grammar every command follows: a model bundle directory is the first positional argument (``algan-train``
writes a new one with ``--out``); a config file is ``--config``; ``--batch-size`` is frames per model run,
``--batch-profile`` a TensorRT MIN:OPT:MAX profile; ``--input-size H W`` (one value = square); ``-q``/``--quiet``;
``--version``; exit 2 for every user error.
"""

from __future__ import annotations

import argparse
import functools
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: exception types a user can cause (bad paths, bad data, bad settings); shown as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_cli(prog: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; user errors become ``prog: error: <message>`` on stderr and exit code 2, Ctrl-C exit 130."""
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # backbone/export errors carry a full sentence too
        print(f"{prog}: error: {exc}", file=sys.stderr)
        # an error type may say it is the user's (``exit_code = 2``, e.g. BackboneError: a bad --blocks or weights)
        return int(getattr(exc, "exit_code", 1))


@functools.cache
def version_string() -> str:
    """``algan-edge <version>`` and, when the package runs from a git checkout, `` (git <short hash>[, modified])``."""
    from algan import __version__

    text = f"algan-edge {__version__}"
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=False)
            if out.returncode == 0 and out.stdout.strip():
                text += f" (git {out.stdout.strip()})"
        except (OSError, subprocess.SubprocessError):
            pass
    return text


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the package version (and git hash) and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {version_string().removeprefix('algan-edge ')}")
        parser.exit(0)


def add_version(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--version`` (package version and git hash when available) to ``p``; returns ``p``."""
    p.add_argument("--version", action=_VersionAction)
    return p


def add_quiet(p: argparse.ArgumentParser, what: str = "no progress output") -> argparse.ArgumentParser:
    """Add ``-q``/``--quiet`` (``args.quiet``) with help text ``what``; returns ``p``."""
    p.add_argument("-q", "--quiet", action="store_true", help=what)
    return p


def deprecated(prog: str, old: str, new: str) -> None:
    """One line on stderr: an old spelling still works for this release."""
    print(f"{prog}: warning: {old} is deprecated and goes away in the next release; use {new}", file=sys.stderr)


class DeprecatedFlag(argparse.Action):
    """An old flag spelling kept for one release: stores like the new one (same ``dest``) and prints
    :func:`deprecated`. Pass ``new="--batch-size"``; hidden from ``--help``."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kw: Any) -> None:
        self.new = new
        kw.setdefault("help", argparse.SUPPRESS)
        # no default of its own: the new spelling's default stands whichever of the two is declared first
        kw["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        deprecated(parser.prog, option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, values)


def input_size(values: list[int]) -> tuple[int, int]:
    """``--input-size H W`` or ``--input-size N`` (square) -> ``(H, W)``.

    Raises:
        ValueError: not one or two positive integers.
    """
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise ValueError(f"--input-size takes H W (or one N for a square), positive pixels; got {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
