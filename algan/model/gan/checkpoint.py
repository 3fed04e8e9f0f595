"""Training checkpoints: safetensors + JSON, written atomically, no pickle.

A checkpoint directory holds at most one committed state, ``state-m<member>-e<epoch>/`` with two files:

- ``state.safetensors``: every tensor (network weights, optimiser moments and steps, reservoirs, RNG states);
- ``state.json``: everything else (epoch, member, history, reservoir counters, fingerprints of the config and the
  training data, ``complete``).

A state is written into a fresh ``.tmp-*`` directory, flushed to disk and then renamed to its final name; only
after that rename are older states removed. A kill at any moment therefore leaves the previous committed state
intact, and a leftover ``.tmp-*`` directory is ignored (and removed at the next load). The newest committed state
(highest member, then epoch) is the one that is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from algan.contract import fsync_path

FORMAT = "algan-train-checkpoint/1"
TENSORS = "state.safetensors"
META = "state.json"
_PREFIX = "state-"
_TMP = ".tmp-"
_STATE_RE = re.compile(r"state-m[0-9]{3}-e[0-9]{6}")


def config_digest(cfg_json: dict) -> str:
    """sha256 of a config's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(cfg_json, sort_keys=True).encode()).hexdigest()


def data_digest(x: np.ndarray) -> str:
    """sha256 of the training data: dtype, shape and raw bytes."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def state_name(member: int, epoch: int) -> str:
    return f"{_PREFIX}m{member:03d}-e{epoch:06d}"


def _committed(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(f"{_PREFIX}m*-e*") if p.is_dir() and (p / META).is_file()
                  and (p / TENSORS).is_file())


def save_state(root: str | os.PathLike, member: int, epoch: int, tensors: dict[str, torch.Tensor],
               meta: dict) -> Path:
    """Atomically commit a state (tensors + JSON-serialisable meta) to checkpoint directory ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP, dir=root))
    try:
        clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        save_file(clean, str(tmp / TENSORS), metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1, sort_keys=True))
        fsync_path(tmp / TENSORS)
        fsync_path(tmp / META)
        fsync_path(tmp)
        final = root / state_name(member, epoch)
        if final.exists():  # only when a state is re-saved; move the old one aside first, then replace it
            old = Path(tempfile.mkdtemp(prefix=_TMP, dir=root))
            os.replace(final, old / "old")
        os.replace(tmp, final)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for p in root.iterdir():  # older states and stale temp dirs (only names this module writes); committed already
        if p != final and (p.name.startswith(_TMP) or _STATE_RE.fullmatch(p.name)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_state(root: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The newest committed state in ``root`` as (tensors, meta), or ``None`` when there is none."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise ValueError(f"checkpoint path {root} exists and is not a directory")
        return None
    for p in root.glob(f"{_TMP}*"):  # left behind by a run killed mid-save
        shutil.rmtree(p, ignore_errors=True)
    states = _committed(root)
    if not states:
        return None
    path = states[-1]
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ALGAN training checkpoint ({FORMAT})")
    return load_file(str(path / TENSORS)), meta


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's per-parameter state flattened to named tensors ``<prefix>.<param>.<key>`` + JSON for
    non-tensor values. The param groups come from the config (checked by fingerprint) and are not stored."""
    tensors, other = {}, {}
    for idx, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = val
            else:
                other[f"{idx}.{key}"] = val
    return tensors, other


def restore_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                      other: dict) -> None:
    """Inverse of :func:`optimizer_tensors` on a freshly built optimiser of the same parameters."""
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = val.clone()
    for name, val in other.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    sd["state"] = state
    opt.load_state_dict(sd)


def sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``<prefix>.``, with the prefix stripped."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}
