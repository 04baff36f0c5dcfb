"""The cheaper forms of CROWN's two costliest steps give the same numbers as the forms they replaced: a
one-channel convolution's backward pass (matmul + fold instead of conv_transpose2d) against autograd's
vector-Jacobian product, and a relaxation's backward pass (one `where` per side) against the clamp form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.certify.bounds import RELAXATIONS, Activation, Conv


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [(28, 4, 2, 1, 1), (27, 4, 2, 1, 1), (28, 5, 1, 2, 1), (13, 3, 3, 0, 2), (10, 2, 2, 0, 1)],
)
def test_a_one_channel_convolution_pulls_back_its_vector_jacobian_product(
    size, kernel, stride, padding, dilation
):
    """A . conv(x) = (backward(A)) . x + bias term for every x: the coefficients are autograd's gradient of
    A . conv(x), the constant A . bias. Odd sizes leave input rows the kernel never reaches (zero there)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, kernel, stride, padding, dilation).double()
    x = torch.rand(1, 1, size, size, dtype=torch.double, requires_grad=True)
    out = conv(x)
    a = torch.randn(2, 4, *out.shape[1:], dtype=torch.double)
    with torch.no_grad():
        back, bias = Conv(conv, (1, size, size)).backward(a)
    for n in range(2):
        for k in range(4):
            (grad,) = torch.autograd.grad((a[n, k] * out[0]).sum(), x, retain_graph=True)
            assert torch.allclose(back[n, k], grad[0], atol=1e-12)
            assert float(bias[n, k]) == pytest.approx(float(a[n, k].sum(dim=(1, 2)) @ conv.bias.detach()))


def _clamp_form(kind, a_lo, a_up, lo, up):
    """The relaxation's backward pass as it was written before: positive and negative parts times lines."""
    lw, lb, uw, ub = (t.unsqueeze(1) for t in RELAXATIONS[kind](lo, up))
    pos, neg = a_lo.clamp(min=0), a_lo.clamp(max=0)
    new_lo, c_lo = pos * lw + neg * uw, (pos * lb + neg * ub).flatten(2).sum(-1)
    pos, neg = a_up.clamp(min=0), a_up.clamp(max=0)
    return new_lo, c_lo, pos * uw + neg * lw, (pos * ub + neg * lb).flatten(2).sum(-1)


@pytest.mark.parametrize("kind", ["relu", "sigmoid"])
@pytest.mark.parametrize("shared", [True, False])
def test_the_relaxed_backward_pass_equals_the_clamp_form(kind, shared):
    """Per image bounds (3 images, a third of the units unstable), coefficients one matrix for every image
    or one per image, lower and upper sides different or the same matrix."""
    g = torch.Generator().manual_seed(1)
    lo = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.double)
    up = lo + 2 * torch.rand(3, 5, 4, 4, generator=g, dtype=torch.double)
    a_lo = torch.randn(1 if shared else 3, 6, 5, 4, 4, generator=g, dtype=torch.double)
    a_lo[..., 0] = 0  # ties at zero take either line: both give 0
    for a_up in (a_lo, torch.randn_like(a_lo)):
        got = Activation(kind).backward_relaxed(a_lo, a_up, lo, up)
        for g_t, w_t in zip(got, _clamp_form(kind, a_lo, a_up, lo, up), strict=True):
            assert torch.allclose(g_t.expand_as(w_t), w_t, atol=1e-12)
