"""ALGAN loss terms against hand-computed values (algan.model.nets.losses; Murase & Fukumizu 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from algan.model.nets.losses import discriminator_loss, generator_loss, r1_penalty

LOG2 = math.log(2.0)


def logits(v: float, n: int = 4) -> torch.Tensor:
    return torch.full((n,), float(v))


def sp(v: float) -> float:
    """softplus = -log(1 - sigmoid(v)) = -log sigmoid(-v)."""
    return math.log1p(math.exp(v))


def test_all_zero_logits_give_log2_terms() -> None:
    # D = 1/2 everywhere: -log D(x) = log 2 and every weighted generated term sums to log 2
    z = logits(0)
    assert discriminator_loss(z, z, z, z, z, alpha=0.3, beta=0.7).item() == pytest.approx(2 * LOG2)
    assert discriminator_loss(z, z, z, None, None).item() == pytest.approx(2 * LOG2)
    assert generator_loss(z).item() == pytest.approx(LOG2)


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.0, 0.5), (1.0, 0.25), (0.3, 1.0), (0.8, 0.0)])
def test_alpha_beta_weighting(alpha: float, beta: float) -> None:
    r, fn, fa, bn, ba = 1.0, -0.5, 2.0, 0.7, -1.5
    want = sp(-r) + alpha * (beta * sp(fn) + (1 - beta) * sp(bn)) + (1 - alpha) * (beta * sp(fa) + (1 - beta) * sp(ba))
    got = discriminator_loss(logits(r), logits(fn), logits(fa), logits(bn), logits(ba), alpha=alpha, beta=beta)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_buffer_none_gives_fresh_terms_full_weight() -> None:
    r, fn, fa = 0.3, -0.2, 1.1
    want = sp(-r) + 0.25 * sp(fn) + 0.75 * sp(fa)
    for beta in (0.0, 0.5, 1.0):
        got = discriminator_loss(logits(r), logits(fn), logits(fa), None, None, alpha=0.25, beta=beta)
        assert got.item() == pytest.approx(want, rel=1e-6)
    # one kind missing counts as no buffer
    got = discriminator_loss(logits(r), logits(fn), logits(fa), logits(5.0), None, alpha=0.25, beta=0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_means_over_batch_and_real_term() -> None:
    real = torch.tensor([0.0, 2.0])
    z = torch.zeros(3)
    want = (sp(0.0) + sp(-2.0)) / 2 + LOG2
    assert discriminator_loss(real, z, z).item() == pytest.approx(want, rel=1e-6)
    assert generator_loss(torch.tensor([1.0, -1.0])).item() == pytest.approx((sp(-1.0) + sp(1.0)) / 2, rel=1e-6)


def test_perfect_discriminator_has_near_zero_loss_and_is_stable() -> None:
    big = 60.0  # softplus form: no overflow / log(0)
    loss = discriminator_loss(logits(big), logits(-big), logits(-big), logits(-big), logits(-big))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(generator_loss(logits(-1e4)).item())


def test_invalid_weights_raise() -> None:
    z = logits(0)
    with pytest.raises(ValueError, match="alpha and beta"):
        discriminator_loss(z, z, z, alpha=1.5)
    with pytest.raises(ValueError, match="alpha and beta"):
        discriminator_loss(z, z, z, beta=-0.1)


def test_losses_are_scalar_float32_with_gradients() -> None:
    x = torch.zeros(5, requires_grad=True)
    loss = discriminator_loss(x, x, x, x, x)
    assert loss.shape == () and loss.dtype == torch.float32
    loss.backward()
    # d/dl [softplus(-l) + softplus(l)] / B at 0 = (-1/2 + 1/2) / B = 0
    assert torch.allclose(x.grad, torch.zeros(5))


def test_r1_penalty_matches_linear_discriminator() -> None:
    # logit = w . x -> grad_x = w for every sample -> gamma/2 * ||w||^2
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    x = torch.randn(6, 2, requires_grad=True)
    pen = r1_penalty(x @ w, x, gamma=2.0)
    assert pen.item() == pytest.approx(25.0, rel=1e-6)
    pen.backward()  # create_graph=True keeps it differentiable w.r.t. D's parameters: d/dw (||w||^2) = 2w
    assert torch.allclose(w.grad, 2.0 * torch.tensor([3.0, 4.0]))
