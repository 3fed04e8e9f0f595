"""The torch runner (algan.export.runner_torch) against the torch detector: CPU fallback always, CUDA FP16 on a GPU."""

import numpy as np
import pytest
import torch

from algan.bundle import load_bundle, load_samples
from algan.export.onnx_export import torch_scores
from algan.export.runner_torch import TorchRunner


def test_cpu_fallback_matches_the_detector(bundles):
    runner = TorchRunner(bundles["mahalanobis"], fp16=False, allow_cpu=True)
    samples = load_samples(bundles["mahalanobis"])
    det, _ = load_bundle(bundles["mahalanobis"])
    out = runner(samples)
    assert out.dtype == np.float32 and out.shape == (len(samples),)
    np.testing.assert_allclose(out, torch_scores(det, samples), atol=1e-5)
    assert runner.input_size == det.input_size


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_cuda_fp16_within_the_fp16_tolerance(bundles):
    runner = TorchRunner(bundles["mahalanobis"], device=0, fp16=True)
    samples = load_samples(bundles["mahalanobis"])
    det, _ = load_bundle(bundles["mahalanobis"])
    ref = torch_scores(det, samples)
    assert np.max(np.abs(runner(samples) - ref) / np.maximum(1.0, np.abs(ref))) <= 1e-2
