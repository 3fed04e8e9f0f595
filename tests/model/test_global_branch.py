"""ALGAN-patch's image-level discriminator (algan.model.heads.patch.GlobalBranch) and its fusion in the detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from algan.model.heads.patch import GlobalBranch, PatchwiseHead, pool_cells


class _Sum(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.sum(1)


def test_set_scales_maps_the_global_threshold_to_weight_times_the_patch_scale():
    b = GlobalBranch(_Sum(), 4, weight=0.5)
    rng = np.random.default_rng(0)
    p, g = rng.normal(3.0, 0.5, 199), rng.normal(-2.0, 4.0, 199)
    b.set_scales(p, g, 0.01)
    pc, gc = float(np.median(p)), float(np.median(g))
    pt, gt = np.sort(p)[197], np.sort(g)[197]  # X_(k), k = ceil(200 * 0.99) = 198 (1-based)
    with torch.no_grad():
        at = b.to_patch_scale(torch.tensor([gc, gt, gc + 2 * (gt - gc)]))
    # the global median lands on the patch median, its threshold half-way to the patch threshold, twice its
    # threshold on the patch threshold: the global score raises an image only at twice its own threshold
    np.testing.assert_allclose(at.numpy(), [pc, pc + 0.5 * (pt - pc), pt], rtol=1e-5)
    with pytest.raises(ValueError, match="weight"):
        GlobalBranch(_Sum(), 4, weight=0.0)


def test_pooling_and_standardisation():
    x = torch.randn(5, 3, 4, 6) * 2 + 1
    pooled = pool_cells(x)
    assert pooled.shape == (5, 6)
    torch.testing.assert_close(pooled[:, :3], x.mean(dim=(2, 3)))
    torch.testing.assert_close(pooled[:, 3:], x.std(dim=(2, 3), unbiased=False))
    b = GlobalBranch(_Sum(), 6)
    train = pool_cells(torch.randn(50, 3, 4, 6) * 3 + 2).numpy()
    z = b.fit_standardization(train)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_detector_takes_the_larger_of_map_and_global_score():
    from algan.contract import PatchSpec
    from algan.features.patch import MapPostprocess
    from algan.model.detector import AnomalyDetector, Calibration

    class Cells(nn.Module):  # "backbone": the image itself as 3-channel cells
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Pre(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 1, 2).float() / 255.0

    spec = PatchSpec(stride=8, map_stride=8, smooth_sigma=0.0, reduction="max", map_norm="none")
    post = MapPostprocess(spec, (8, 8))
    head = PatchwiseHead(_Sum())
    det = AnomalyDetector(Pre(), Cells(), nn.Identity(), head, Calibration(0.0, 1.0), (8, 8), post)
    frames = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    frames[0, 3, 3] = 255  # one bright cell: the map's peak
    frames[1] = 40  # a uniformly brighter frame: no cell stands out, the pooled mean does
    with torch.no_grad():
        alone = det.raw_scores(frames)
        head.global_branch = GlobalBranch(_Sum(3.0), 6, weight=1.0)
        fused = det.raw_scores(frames)
        g = head.global_branch(det.cells(frames))
        scores, maps = det.score_and_maps(frames)
    assert det.global_branch is head.global_branch
    torch.testing.assert_close(fused, torch.maximum(alone, g))
    assert float(g[1]) > float(alone[1])  # the global change decides frame 1
    torch.testing.assert_close(scores, fused)
    torch.testing.assert_close(maps, det.raw_maps(frames))  # the maps stay the patch head's
