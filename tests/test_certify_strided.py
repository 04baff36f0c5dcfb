"""Bounds on the zoo's StridedCNN (cnn-robust, cnn-fgsm-rs): its nested Sequential blocks walked into the
chain of ops, strided and padded convolutions pushed forward (IBP) and backward (CROWN). Checked against
sampling and PGD inside the ball, against the same net unfolded into dense matrices by plain numpy loops
(IBP; CROWN where the net is affine on the ball, so that its bound is the exact minimum), and CROWN
against IBP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.certify import bounds as B
from core.models import nets
from tests.test_certify_bounds import margin_violation


def _strided(channels=(2, 3), hidden=8, normalized=False) -> nn.Module:
    """The zoo's StridedCNN, narrow, random weights, in float64 (and behind the input normalisation)."""
    torch.manual_seed(0)
    net = nets.StridedCNN(channels, hidden)
    net = nets.Normalized(net, (0.13,), (0.31,)) if normalized else net
    return net.double().eval()


def _images(count: int, shape=(1, 28, 28), seed: int = 1) -> torch.Tensor:
    x = torch.rand(count, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.double)
    x[0] = 0.0  # on the box's corner: the box must clip the ball
    return x


def test_the_walk_gives_the_chain_and_its_forward():
    model = _strided(normalized=True)
    net = B.Network.from_module(model)
    kinds = [type(op).__name__ for op in net.ops]
    assert kinds == ["Affine", "Conv", "Activation", "Conv", "Activation", "Flatten", "Linear", "Activation",
                     "Linear"]  # fmt: skip
    assert net.shapes[1:5] == [(1, 28, 28), (2, 14, 14), (2, 14, 14), (3, 7, 7)]
    x = _images(3)
    assert torch.allclose(net.forward(x), model(x))


@pytest.mark.parametrize("method", B.METHODS)
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.03), ("l2", 0.6)])
def test_bounds_hold_on_a_strided_cnn(method, norm, eps):
    model = _strided(normalized=True)
    x = _images(4)
    labels = model(x).argmax(1)
    net = B.Network.from_module(model)
    ball = B.Ball(x, eps, norm)
    bounds = B.intermediate_bounds(net, ball, "crown")
    assert all(((lo < 0) & (up > 0)).any() for lo, up in bounds.values())  # every ReLU has unstable units
    assert margin_violation(model, net, ball, labels, method) <= 1e-9


@pytest.mark.parametrize("norm", B.NORMS)
def test_crown_at_least_as_tight_as_ibp(norm):
    model = _strided()
    x = _images(4, seed=2)
    labels = model(x).argmax(1)
    net = B.Network.from_module(model)
    ball = B.Ball(x, 0.02 if norm == "linf" else 0.5, norm)
    ibp, crown = (B.margin_bounds(net, ball, labels, m) for m in ("ibp", "crown"))
    assert (crown >= ibp - 1e-12).all() and (crown > ibp + 1e-6).any()


def _conv_matrix(conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(M, b, out_shape): the convolution as a dense matrix on flat inputs, entry by entry from its
    definition (out[o, i, j] = sum_c,ky,kx w[o, c, ky, kx] in[c, i s - p + ky, j s - p + kx], zero outside)."""
    w = conv.weight.detach().numpy()
    co, ci, k, _ = w.shape
    (s, _), (p, _) = conv.stride, conv.padding
    c, h, wd = in_shape
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    m = np.zeros((co, ho, wo, c, h, wd))
    for i in range(ho):
        for j in range(wo):
            for ky in range(k):
                for kx in range(k):
                    y, x = i * s - p + ky, j * s - p + kx
                    if 0 <= y < h and 0 <= x < wd:
                        m[:, i, j, :, y, x] += w[:, :, ky, kx]
    bias = np.repeat(conv.bias.detach().numpy(), ho * wo)
    return m.reshape(co * ho * wo, c * h * wd), bias, (co, ho, wo)


def _dense(model: nets.StridedCNN, in_shape) -> list[tuple[np.ndarray, np.ndarray]]:
    """The StridedCNN's four affine layers as dense (W, b), ReLU between each."""
    m1, b1, shape = _conv_matrix(model.conv1[0], in_shape)
    m2, b2, _ = _conv_matrix(model.conv2[0], shape)
    fc, out = model.fc1[1], model.out
    return [
        (m1, b1),
        (m2, b2),
        *((lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in (fc, out)),
    ]


def test_ibp_equals_interval_arithmetic_on_the_unfolded_net():
    model = _strided()
    x = _images(3, seed=3)
    ball = B.Ball(x, 0.05, "linf")
    with torch.no_grad():
        lo, up = B.output_bounds(B.Network.from_module(model), ball, "ibp")
    box_lo, box_up = (t.flatten(1).numpy() for t in ball.box())
    layers = _dense(model, (1, 28, 28))
    for n in range(len(x)):
        low, high = box_lo[n], box_up[n]
        for k, (w, b) in enumerate(layers):
            mid, rad = w @ (low + high) / 2 + b, np.abs(w) @ (high - low) / 2
            low, high = mid - rad, mid + rad
            if k < len(layers) - 1:
                low, high = np.maximum(low, 0), np.maximum(high, 0)
        assert np.allclose(lo[n].numpy(), low, rtol=0, atol=1e-10)
        assert np.allclose(up[n].numpy(), high, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "side", [28, 27]
)  # 27: the strided conv's output does not cover its input's last row
@pytest.mark.parametrize("prefix", [True, False])  # without: CROWN goes back through the first conv too
def test_crown_is_exact_where_the_net_is_affine_on_the_ball(side, prefix, monkeypatch):
    """A bias so large that every ReLU stays active on the ball: the net is one affine map there, whose
    range over the box is known in closed form; CROWN's backward pass through the convolutions (stride 2,
    padding 1, transposed back to the input's shape) must give exactly that range."""
    if not prefix:
        monkeypatch.setattr(B, "PREFIX_MAX_ENTRIES", 0)
    model = _strided()
    in_shape = (1, side, side)
    if side != 28:  # the FC layer takes the smaller map: 27 -> 13 -> 6
        model.fc1[1] = nn.Linear(3 * 6 * 6, 8).double()
    with torch.no_grad():  # conv1's output is >= 0 on the box, and stays so through nonnegative weights
        model.conv1[0].bias += 10.0
        for layer in (model.conv2[0], model.fc1[1]):
            layer.weight.abs_()
    x = _images(3, in_shape, seed=4)
    ball = B.Ball(x, 0.05, "linf")
    net = B.Network.from_module(model, in_shape)
    assert (net.prefix is not None) == prefix
    assert all((lo > 0).all() for lo, _ in B.intermediate_bounds(net, ball, "ibp").values())  # all active
    lo, up = B.output_bounds(net, ball, "crown")
    w, b = np.eye(x[0].numel()), np.zeros(x[0].numel())
    for wk, bk in _dense(model, in_shape):
        w, b = wk @ w, wk @ b + bk
    box_lo, box_up = (t.flatten(1).numpy() for t in ball.box())
    for n in range(len(x)):
        centre, spread = w @ (box_lo[n] + box_up[n]) / 2 + b, np.abs(w) @ (box_up[n] - box_lo[n]) / 2
        assert np.allclose(lo[n].numpy(), centre - spread, rtol=1e-10, atol=1e-9)
        assert np.allclose(up[n].numpy(), centre + spread, rtol=1e-10, atol=1e-9)


def test_chunked_and_per_image_rows_give_the_same_relaxations(monkeypatch):
    """CROWN's intermediate bounds one unit at a time on the union of the batch's unstable units give every
    ReLU the same relaxation as each image's own units in large chunks (each unit's bound is its own
    backward pass; a stable unit's relaxation does not depend on its bounds)."""
    model = _strided()
    x = _images(4, seed=5)
    net = B.Network.from_module(model)
    ball = B.Ball(x, 0.03, "linf")
    per_image = B.intermediate_bounds(net, ball, "crown")
    rows = B._unit_rows
    monkeypatch.setattr(B, "CHUNK_ENTRIES", 1)
    monkeypatch.setattr(B, "_unit_rows", lambda mask, shared: rows(mask, True))
    union = B.intermediate_bounds(net, ball, "crown")
    for i, (lo, up) in per_image.items():
        assert ((lo < 0) & (up > 0)).any()
        for a, b in zip(B.relax_relu(lo, up), B.relax_relu(*union[i]), strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-12)


class _Residual(nn.Sequential):
    """A block whose forward adds its input back: walking its layers alone would miss the skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def test_a_forward_the_walk_does_not_reproduce_is_refused():
    model = nn.Sequential(nn.Flatten(), _Residual(nn.Linear(784, 784), nn.ReLU()), nn.Linear(784, 10))
    with pytest.raises(B.UnsupportedLayerError, match="not its layers applied in turn"):
        B.Network.from_module(model)
