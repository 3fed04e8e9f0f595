"""Resumable ALGAN training checkpoints (algan.model.gan.checkpoint), in depth on the feature variant; the properties
that hold for every variant (the image variant too) are tested in tests/model/gan/test_gan_loop.py."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from algan.model.fit import FitSettings, fit_head
from algan.model.gan import checkpoint as ckpt
from algan.model.gan.feature import AlganConfig, train_algan

torch.set_num_threads(1)


def gauss(n: int = 64, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def small(preset: str = "default", **kw) -> AlganConfig:
    # 8 steps per epoch; the reservoir (32) overflows during the 2 buffer epochs, so replacement is exercised
    return AlganConfig.preset(preset, **{"epochs": 4, "min_steps": 0, "batch_size": 8, "d_hidden": [16, 8],
                                         "buffer_epochs": 2, "buffer_size": 32, "ensemble": 1, **kw})


def digest(r) -> str:
    h = hashlib.sha256()
    for part in (r.head, *r.generators):
        for k, v in sorted(part.state_dict().items()):
            h.update(k.encode())
            h.update(v.numpy().tobytes())
    return h.hexdigest()


def assert_same(a, b, x: np.ndarray) -> None:
    assert digest(a) == digest(b)
    assert a.history == b.history
    with torch.no_grad():
        assert torch.equal(a.head.eval()(torch.from_numpy(x)), b.head.eval()(torch.from_numpy(x)))


class Killed(Exception):
    pass


def kill_after_saves(monkeypatch, n: int) -> None:
    """Make the n-th committed checkpoint the last one: raise right after it is written (a kill)."""
    orig, count = ckpt.save_state, [0]

    def save(*a, **kw):
        out = orig(*a, **kw)
        count[0] += 1
        if count[0] == n:
            raise Killed
        return out

    monkeypatch.setattr(ckpt, "save_state", save)


CASES = {
    "default": small(),
    "paper": small("paper", z_dim=4, g_hidden=[8]),
    "regularised": small(spectral_norm=True, d_dropout=0.2, r1_gamma=1.0, d_weight_decay=1e-4),
    "ensemble": small(ensemble=2),
}


@pytest.mark.parametrize(("case", "kill_at", "every"), [
    ("default", 2, 1), ("paper", 1, 1), ("regularised", 3, 1), ("ensemble", 4, 1), ("ensemble", 5, 1),
    ("default", 1, 3),
])
def test_resumed_training_is_bit_identical(case, kill_at, every, tmp_path, monkeypatch) -> None:
    x, cfg = gauss(), CASES[case]
    full = train_algan(x, cfg, progress=False)
    with monkeypatch.context() as m:
        kill_after_saves(m, kill_at)
        with pytest.raises(Killed):
            train_algan(x, cfg, progress=False, checkpoint=tmp_path, checkpoint_every=every)
    (state,) = [p for p in tmp_path.iterdir()]
    assert not json.loads((state / ckpt.META).read_text())["complete"]
    resumed = train_algan(x, cfg, progress=False, checkpoint=tmp_path, checkpoint_every=every)
    assert_same(resumed, full, x)
    assert len(resumed.history) == cfg.epochs


def test_interrupt_from_on_epoch_and_progress_message(tmp_path, capsys) -> None:
    x, cfg = gauss(), small()
    full = train_algan(x, cfg, progress=False)

    def stop(epoch, head):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        train_algan(x, cfg, progress=False, on_epoch=stop, checkpoint=tmp_path)
    seen = []
    resumed = train_algan(x, cfg, progress=True, on_epoch=lambda e, h: seen.append(e), checkpoint=tmp_path)
    assert seen == [4]
    assert "resuming from epoch 3" in capsys.readouterr().err
    assert_same(resumed, full, x)


def test_a_complete_checkpoint_returns_at_once(tmp_path, capsys) -> None:
    x, cfg = gauss(), small(ensemble=2)
    first = train_algan(x, cfg, progress=False, checkpoint=tmp_path)
    (state,) = list(tmp_path.iterdir())
    assert state.name == ckpt.state_name(1, cfg.epochs)
    assert json.loads((state / ckpt.META).read_text())["complete"]
    seen = []
    again = train_algan(x, cfg, progress=True, on_epoch=lambda e, h: seen.append(e), checkpoint=tmp_path)
    assert "is complete" in capsys.readouterr().err
    assert seen == [cfg.epochs]  # the ensemble's end-of-training callback only; no epoch was trained
    assert_same(again, first, x)
    assert list(tmp_path.iterdir()) == [state]


def test_mismatched_config_or_data_is_refused(tmp_path, monkeypatch) -> None:
    x, cfg = gauss(), small()
    with monkeypatch.context() as m:
        kill_after_saves(m, 1)
        with pytest.raises(Killed):
            train_algan(x, cfg, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match=r"different ALGAN config \(differs in: epochs\)"):
        train_algan(x, small(epochs=5), progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="different ALGAN config .*seed"):
        train_algan(x, small(seed=1), progress=False, checkpoint=tmp_path)
    y = x.copy()
    y[0, 0] += 1e-3
    with pytest.raises(ValueError, match="different training data"):
        train_algan(y, cfg, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="different training data"):
        train_algan(x[:-1], cfg, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_algan(x, cfg, progress=False, checkpoint=tmp_path, checkpoint_every=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        train_algan(x, cfg, progress=False, checkpoint=tmp_path / "file")


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path) -> None:
    x, cfg = gauss(), small("paper", z_dim=4, g_hidden=[8])
    train_algan(x, cfg, progress=False, checkpoint=tmp_path)
    (state,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in state.iterdir()) == sorted([ckpt.TENSORS, ckpt.META])
    meta = json.loads((state / ckpt.META).read_text())
    assert meta["config"] == cfg.to_json() and meta["member"] == 0 and meta["epoch"] == cfg.epochs
    raw = (state / ckpt.TENSORS).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # a safetensors file: u64 header length, JSON header, raw tensor bytes
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(raw) == 8 + n + end
    assert b"\x80\x02" not in raw[:2] and not raw.startswith(b"PK")  # neither a pickle nor a torch.save zip
    tensors = load_file(str(state / ckpt.TENSORS))
    assert {"cur.rng.gen", "cur.rng.torch", "cur.buf_n.data", "cur.opt_d.0.exp_avg", "cur.opt_g.0.step"} <= set(
        tensors)
    assert meta["member_state"]["buf_n"] == {"size": 32, "seen": 128}


def test_a_kill_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    x, cfg = gauss(), small()
    full = train_algan(x, cfg, progress=False)
    orig, count = ckpt.save_file, [0]

    def save_file(tensors, path, metadata=None):  # the 3rd save dies half-way through writing its tensors
        count[0] += 1
        if count[0] == 3:
            Path(path).write_bytes(b"\x00" * 10)
            raise Killed
        return orig(tensors, path, metadata=metadata)

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_file", save_file)
        with pytest.raises(Killed):
            train_algan(x, cfg, progress=False, checkpoint=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.state_name(0, 2)]
    # a temp dir left by a real kill (no clean-up ran) holds garbage; resuming ignores and removes it
    junk = tmp_path / ".tmp-killed"
    junk.mkdir()
    (junk / ckpt.TENSORS).write_bytes(b"\x00" * 10)
    (junk / ckpt.META).write_text("{")
    resumed = train_algan(x, cfg, progress=False, checkpoint=tmp_path)
    assert_same(resumed, full, x)
    assert not junk.exists()


def test_fit_head_plumbs_the_checkpoint(tmp_path) -> None:
    x, cfg = gauss(), small()
    head, _, _, _ = fit_head(FitSettings(algan=cfg, checkpoint=str(tmp_path / "ck")), x, progress=False)
    assert len(list((tmp_path / "ck").iterdir())) == 1
    ref = train_algan(x, cfg, progress=False).head
    with torch.no_grad():
        assert torch.equal(head.eval()(torch.from_numpy(x)), ref(torch.from_numpy(x)))
    with pytest.raises(ValueError, match="ALGAN head only"):
        fit_head(FitSettings(head="knn", checkpoint=str(tmp_path / "k")), x, progress=False)


@pytest.mark.parametrize("extra", [["--head", "mahalanobis"], ["--variant", "patch", "--head", "patchcore"]])
def test_cli_refuses_checkpoint_with_other_heads(extra, tmp_path, capsys) -> None:
    from algan.cli.train import main

    rc = main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--checkpoint",
               str(tmp_path / "ck"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("algan-train: error: --checkpoint works with the ALGAN head only (--head algan, any")
    assert "\n" not in err
