"""Bound propagation: lower bounds on every margin logit_y - logit_j that hold for *every* input of a ball
(Linf or L2, intersected with the [0, 1] box), batched over images in torch.

    net = Network.from_module(model)                    # the zoo's layers as a chain of ops
    ball = Ball(x, eps, "linf")                         # eps: a number or one per image
    lower = margin_bounds(net, ball, labels, "crown")   # (N, classes); row y is 0; > 0 everywhere: proved
    radius = certified_radius(net, x, labels, "linf", "crown")

Methods: IBP (intervals pushed forward, Gowal et al. 2019), CROWN (a linear lower and upper bound of every
activation, composed backwards, Zhang et al. 2018) and alpha-CROWN (the slopes of ReLU's lower bounds
optimised by gradient, Xu et al. 2021; every slope in [0, 1] gives a sound bound, so optimising only tightens).
The relaxations live in `RELAXATIONS`, one function per activation, so that a test can swap in a wrong one
and see the soundness check catch it. Soundness holds up to floating-point rounding of the model's dtype.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.checks import check_choice, check_float
from core.errors import InvalidParameterError
from core.models import nets

NORMS = ("linf", "l2")
METHODS = ("ibp", "crown", "alpha-crown")
MAX_RADIUS = {"linf": 1.0, "l2": 28.0}  # a ball of this radius already holds the whole [0, 1] box
CROWN_MAX_NEURONS = 4096  # wider layers take IBP's intermediate bounds (a (neurons x input) matrix per image)
PREFIX_MAX_ENTRIES = 4096 * 784  # the largest first affine map (outputs x inputs) kept as a dense matrix
CHUNK_ENTRIES = 2**25  # CROWN bounds this many coefficients (images x units x an op's width) at a time


class UnsupportedLayerError(InvalidParameterError):
    """A layer bound propagation has no relaxation for (its message names it)."""


# ---------------------------------------------------------------- the chain of ops


@dataclass
class Linear:
    """x -> x W^T + b on flat inputs (N, in)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.weight.abs().T

    def forward_sq(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.weight.square().T

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A W, A b) for a coefficient matrix A (N, K, out)."""
        return a @ self.weight, a @ self.bias


class _NoTF32:
    """TF32 off (cuDNN's convolutions and CUDA matmuls) while any bound is being computed, in any thread:
    the switches are global, so they go back to what they were only when the last bound in flight ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: list[bool] = []

    def __enter__(self) -> None:
        with self.lock:
            if self.users == 0:
                self.saved = [f.allow_tf32 for f in self.flags()]
                for f in self.flags():
                    f.allow_tf32 = False
            self.users += 1

    def __exit__(self, *_) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for f, value in zip(self.flags(), self.saved, strict=True):
                    f.allow_tf32 = value

    @staticmethod
    def flags() -> tuple:
        return torch.backends.cudnn, torch.backends.cuda.matmul


_NO_TF32 = _NoTF32()


def full_float32(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """On a GPU, a bound's convolutions in true float32: cuDNN's default is TF32 (a 10-bit mantissa), far
    too coarse for a bound that must hold; the products inside them are held to float32 too (TF32 under
    torch.set_float32_matmul_precision('high')). Nothing changes on a CPU."""
    return _NO_TF32 if t.is_cuda else contextlib.nullcontext()


@dataclass
class Conv:
    """A 2-d convolution (its module's weight, bias, stride, padding, dilation, groups)."""

    conv: nn.Conv2d
    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_float32(x):
            return self.conv(x)

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        c = self.conv
        with full_float32(r):
            return F.conv2d(r, c.weight.abs(), None, c.stride, c.padding, c.dilation, c.groups)

    def forward_sq(self, r: torch.Tensor) -> torch.Tensor:
        c = self.conv
        with full_float32(r):
            return F.conv2d(r, c.weight.square(), None, c.stride, c.padding, c.dilation, c.groups)

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with full_float32(a):
            return self._backward(a)

    def _backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.conv
        n, k = a.shape[:2]
        out_shape = a.shape[2:]
        flat = a.reshape(n * k, *out_shape)
        if c.in_channels == 1 and c.groups == 1:  # conv_transpose2d onto one channel: ~5x slower on CPU
            cols = c.weight.flatten(1).T @ flat.flatten(2)  # (N K, kh kw, out pixels)
            back = F.fold(cols, self.in_shape[1:], c.kernel_size, c.dilation, c.padding, c.stride)
        else:
            natural = [(o - 1) * s - 2 * p + d * (kk - 1) + 1 for o, s, p, d, kk in zip(
                out_shape[1:], c.stride, c.padding, c.dilation, c.kernel_size, strict=True)]  # fmt: skip
            extra = [i - nat for i, nat in zip(self.in_shape[1:], natural, strict=True)]
            back = F.conv_transpose2d(
                flat, c.weight, None, c.stride, c.padding, tuple(extra), c.groups, c.dilation
            )
        bias = a.sum(dim=(3, 4)) @ c.bias if c.bias is not None else a.new_zeros(n, k)
        return back.reshape(n, k, *self.in_shape), bias


@dataclass
class Affine:
    """Elementwise x * scale + shift (input normalisation, a folded BatchNorm), broadcast per channel."""

    scale: torch.Tensor
    shift: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.scale.abs()

    def forward_sq(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.scale.square()

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a * self.scale, (a * self.shift).flatten(2).sum(-1)


@dataclass
class Flatten:
    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        return r.flatten(1)

    def forward_sq(self, r: torch.Tensor) -> torch.Tensor:
        return r.flatten(1)

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a.reshape(*a.shape[:2], *self.in_shape), a.new_zeros(a.shape[:2])


@dataclass
class Activation:
    """An elementwise monotone activation: 'relu' or 'sigmoid'."""

    kind: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.kind == "relu" else torch.sigmoid(x)

    def backward_relaxed(self, a_lo, a_up, lo, up, alpha=None) -> tuple:
        """Coefficients and constants of the lower bound of a_lo . h and the upper bound of a_up . h, with
        h = act(x) replaced by its lines on [lo, up]; one matrix stays shared when both lines have one slope.
        Each entry picks its line by its sign (one `where`, products as batched dot products: the op is
        memory-bound, and the clamp-multiply-add form made about twice as many passes over A)."""
        lw, lb, uw, ub = (t.unsqueeze(1) for t in RELAXATIONS[self.kind](lo, up, alpha))
        if a_up is a_lo and torch.equal(lw, uw):
            new = a_lo * lw
            return new, _signed_dot(a_lo, lb, ub), new, _signed_dot(a_lo, ub, lb)
        new_lo, c_lo = a_lo * torch.where(a_lo >= 0, lw, uw), _signed_dot(a_lo, lb, ub)
        if a_up is None:
            return new_lo, c_lo, None, None
        return new_lo, c_lo, a_up * torch.where(a_up >= 0, uw, lw), _signed_dot(a_up, ub, lb)


def _signed_dot(a: torch.Tensor, b_pos: torch.Tensor, b_neg: torch.Tensor) -> torch.Tensor:
    """Per row of a (N or 1, K, *shape): the sum of a * b_pos where a >= 0 and a * b_neg where a < 0, for
    b (N, 1, *shape); a zero side (ReLU's lower line has no intercept) is skipped."""

    def dot(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (u.flatten(2) @ b.flatten(1).unsqueeze(-1)).squeeze(-1)

    total = dot(a.clamp(max=0), b_neg) if b_neg.any() else a.new_zeros(())
    return total + dot(a.clamp(min=0), b_pos) if b_pos.any() else total


@dataclass
class MaxPool:
    """2-d max pooling (no padding, no dilation). Relaxed per window on the input bounds [lo, up]: below by
    the element of highest lower bound (max >= any element); above by max(x_k, M) <= its chord in x_k, where
    k has the highest upper bound and M the window's second-highest (exact when l_k >= M, constant M when
    u_k <= M)."""

    pool: nn.MaxPool2d
    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)

    def _relaxation(self, lo: torch.Tensor, up: torch.Tensor):
        """Per output unit: the flat input index of the lower line's element, of the upper line's, and the
        upper line's slope and intercept (N, C, Ho*Wo each)."""
        p = self.pool
        _, k_lo = F.max_pool2d(lo, p.kernel_size, p.stride, return_indices=True)
        top, k_up = F.max_pool2d(up, p.kernel_size, p.stride, return_indices=True)
        n, c = up.shape[:2]
        windows = F.unfold(up, p.kernel_size, stride=p.stride).view(n, c, -1, top[0, 0].numel())
        second = windows.topk(2, dim=2).values[:, :, 1] if windows.shape[2] > 1 else torch.full_like(
            windows[:, :, 0], -torch.inf)  # fmt: skip
        k_lo, k_up, top = k_lo.flatten(2), k_up.flatten(2), top.flatten(2)
        l_k = lo.flatten(2).gather(2, k_up)
        slope = ((top - second) / (top - l_k).clamp(min=1e-12)).clamp(0, 1)
        slope = torch.where(second <= l_k, torch.ones_like(slope), slope)
        intercept = torch.where(second <= l_k, torch.zeros_like(slope), second - slope * l_k)
        return k_lo, k_up, slope, intercept

    def _scatter(self, a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Coefficients (N, K, C, Ho, Wo) on pooled units moved to the input elements `index` (N, C, Ho*Wo)."""
        n = max(a.shape[0], index.shape[0])
        flat = a.expand(n, *a.shape[1:]).flatten(3)
        out = flat.new_zeros(*flat.shape[:3], self.in_shape[1] * self.in_shape[2])
        out.scatter_add_(3, index.unsqueeze(1).expand_as(flat), flat)
        return out.view(*flat.shape[:2], *self.in_shape)

    def backward_relaxed(self, a_lo, a_up, lo, up, alpha=None) -> tuple:
        """As Activation.backward_relaxed: the lower line for positive coefficients of a lower bound (and
        negative ones of an upper bound), the upper line for the others."""
        k_lo, k_up, slope, intercept = self._relaxation(lo, up)
        shape = (len(slope), 1, *self.pool(lo).shape[1:])
        slope, intercept = slope.view(shape), intercept.view(shape)

        def side(low_part, up_part):
            const = (up_part * intercept).flatten(2).sum(-1)
            return self._scatter(low_part, k_lo) + self._scatter(up_part * slope, k_up), const

        new_lo, c_lo = side(a_lo.clamp(min=0), a_lo.clamp(max=0))
        if a_up is None:
            return new_lo, c_lo, None, None
        new_up, c_up = side(a_up.clamp(max=0), a_up.clamp(min=0))
        return new_lo, c_lo, new_up, c_up


Op = Linear | Conv | Affine | Flatten | Activation | MaxPool
LINEAR_OPS = (Linear, Conv, Affine, Flatten)
RELAXED_OPS = (Activation, MaxPool)


def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of a zoo network in the order its forward applies them."""
    if isinstance(module, nets.Normalized):
        return [module, *_layers(module.net)]
    if isinstance(module, nets.SoftmaxRegression):
        return [nn.Flatten(), module.out]
    if isinstance(module, nets.SigmoidMLP):
        return [nn.Flatten(), *(m for block in module.hidden for m in _layers(block)), module.out]
    if isinstance(module, nets.AutoencoderClassifier):
        return [nn.Flatten(), *_layers(module.encoder), module.out]
    if isinstance(module, nets.SmallCNN | nets.StridedCNN):  # nested Sequential blocks, applied in turn
        return [*_layers(module.conv1), *_layers(module.conv2), *_layers(module.fc1), module.out]
    if isinstance(module, nn.Sequential | nn.ModuleList):
        return [m for child in module for m in _layers(child)]
    return [module]


def _op(layer: nn.Module, in_shape: tuple[int, ...]) -> Op | None:
    """The op for one layer (None for layers that do nothing at evaluation, e.g. Dropout)."""
    if isinstance(layer, nets.Normalized):
        return Affine(1 / layer.std[0], -layer.mean[0] / layer.std[0])
    if isinstance(layer, nn.Linear):
        bias = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
        return Linear(layer.weight, bias)
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedLayerError(f"unsupported layer: Conv2d with padding {layer.padding!r}.")
        return Conv(layer, in_shape)
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        shift = layer.bias - layer.running_mean * scale
        view = (-1, 1, 1) if isinstance(layer, nn.BatchNorm2d) else (-1,)
        return Affine(scale.view(view), shift.view(view))
    if isinstance(layer, nn.Flatten):
        return Flatten(in_shape)
    if isinstance(layer, nn.ReLU):
        return Activation("relu")
    if isinstance(layer, nn.Sigmoid):
        return Activation("sigmoid")
    if isinstance(layer, nn.MaxPool2d):
        plain = layer.padding in (0, (0, 0)) and layer.dilation in (1, (1, 1)) and not layer.ceil_mode
        if not plain or layer.return_indices:
            raise UnsupportedLayerError("unsupported layer: MaxPool2d with padding, dilation or ceil_mode.")
        return MaxPool(layer, in_shape)
    if isinstance(layer, nn.Dropout | nn.Identity):
        return None
    raise UnsupportedLayerError(
        f"unsupported layer: {type(layer).__name__} (bounds cover Linear, Conv2d, ReLU, Sigmoid, MaxPool2d, "
        "Flatten, BatchNorm and the input normalisation)."
    )


@dataclass
class Network:
    """A feed-forward chain of ops and the shape each op takes (`shapes[i]` is the input of `ops[i]`)."""

    ops: list[Op]
    shapes: list[tuple[int, ...]]

    @classmethod
    def from_module(cls, model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> Network:
        """Walk a zoo model (or an nn.Sequential of supported layers); UnsupportedLayerError names a layer
        bound propagation cannot handle."""
        ops: list[Op] = []
        shapes = [tuple(input_shape)]
        param = next(model.parameters())
        h = torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device)
        with torch.no_grad():
            for layer in _layers(model):
                op = _op(layer, shapes[-1])
                if op is None:
                    continue
                h = op.forward(h)
                ops.append(op)
                shapes.append(tuple(h.shape[1:]))
        if not isinstance(ops[-1], Linear):
            raise UnsupportedLayerError("unsupported network: the last layer must be Linear (the logits).")
        net = cls(ops, shapes)
        net._check_walk(model)
        return net

    def _check_walk(self, model: nn.Module) -> None:
        """The chain must compute what the module computes (in eval mode): a forward that does more than
        apply its layers in turn (a skip connection, an op outside any layer) would make every bound wrong."""
        param = next(model.parameters())
        x = torch.rand(2, *self.shapes[0], generator=torch.Generator().manual_seed(0)).to(param)
        training = model.training
        with torch.no_grad(), full_float32(x):  # both in float32 (on a GPU the module's convs are TF32)
            expected = model.eval()(x)
            got = self.forward(x)
        model.train(training)
        if got.shape != expected.shape or not torch.allclose(
            got, expected, rtol=1e-4, atol=1e-4 * (1 + float(expected.abs().max()))
        ):
            raise UnsupportedLayerError(
                f"unsupported network: {type(model).__name__}'s forward is not its layers applied in turn "
                "(a skip connection or an operation outside its layers)."
            )

    @property
    def activations(self) -> set[str]:
        return {op.kind for op in self.ops if isinstance(op, Activation)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op.forward(x)
        return x

    @cached_property
    def prefix(self) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """(p, M, c): the ops before the first relaxed one, ops[:p], as one dense affine map M x + c on the
        flat input, when it is small (CROWN then bounds A (M x + c) without forming A M per op). Taken from
        the weights when first asked: build a new Network after changing them."""
        p = next((i for i, op in enumerate(self.ops) if isinstance(op, RELAXED_OPS)), len(self.ops))
        n_in, n_out = int(np.prod(self.shapes[0])), int(np.prod(self.shapes[p]))
        if p == 0 or n_out > CROWN_MAX_NEURONS or n_in * n_out > PREFIX_MAX_ENTRIES:
            return None
        ref = self.ops[-1].weight
        h = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).to(ref).view(-1, *self.shapes[0])
        with torch.no_grad():
            for op in self.ops[:p]:
                h = op.forward(h)
        h = h.flatten(1)
        return p, (h[1:] - h[0]).T.contiguous(), h[0].clone()


# ---------------------------------------------------------------- the input set


@dataclass
class Ball:
    """{x : ||x - center|| <= eps} intersected with the [0, 1] box; eps is one radius per image (N,)."""

    center: torch.Tensor
    eps: torch.Tensor
    norm: str

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, NORMS)
        self.eps = torch.as_tensor(self.eps, dtype=self.center.dtype, device=self.center.device)
        self.eps = self.eps.expand(len(self.center)).clone() if self.eps.dim() == 0 else self.eps
        if not torch.isfinite(self.eps).all() or (self.eps < 0).any():
            raise InvalidParameterError("the ball's radius must be finite and >= 0.")

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tightest box around the set (for L2: the ball's bounding box, clipped to [0, 1])."""
        e = self.eps.view(-1, *([1] * (self.center.dim() - 1)))
        return (self.center - e).clamp(0, 1), (self.center + e).clamp(0, 1)

    def linear_range(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """min and max over the set of a . x, for a (N, K, *input) (N may be 1: one matrix for every image):
        exact for Linf; for L2 the tighter of the ball's and the box's bound (each set contains the
        intersection, so both are sound)."""
        lo, hi = (b.flatten(1).unsqueeze(-1) for b in self.box())
        flat = a.flatten(2)
        centre, spread = (flat @ ((lo + hi) / 2)).squeeze(-1), (flat.abs() @ ((hi - lo) / 2)).squeeze(-1)
        low, high = centre - spread, centre + spread
        if self.norm == "l2":
            centre = (flat @ self.center.flatten(1).unsqueeze(-1)).squeeze(-1)
            spread = self.eps[:, None] * flat.norm(dim=-1)
            low, high = torch.maximum(low, centre - spread), torch.minimum(high, centre + spread)
        return low, high

    def min_linear(self, a: torch.Tensor) -> torch.Tensor:
        """min over the set of a . x (see linear_range)."""
        return self.linear_range(a)[0]

    def affine_range(
        self, a: torch.Tensor, m: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """linear_range of (a M) . x, plus a . c, for a (N or 1, K, out), M (out, in): one matrix for every
        image (N = 1) costs one (K x in) product; per-image matrices one batched product and one pass."""
        lo, hi = (b.flatten(1) for b in self.box())
        centres = [(lo + hi) / 2] + ([self.center.flatten(1)] if self.norm == "l2" else [])
        flat = a.flatten(2)
        const = flat @ c
        g = flat[0] @ m if flat.shape[0] == 1 else flat @ m  # (K, in) or (N, K, in)
        if g.dim() == 2:
            box_c, *ball_c = (x @ g.T for x in centres)
        else:
            box_c, *ball_c = ((flat @ (x @ m.T).unsqueeze(-1)).squeeze(-1) for x in centres)
        g = g.abs() if g.requires_grad else g.abs_()
        spread = (hi - lo) / 2 @ g.T if g.dim() == 2 else (g @ ((hi - lo) / 2).unsqueeze(-1)).squeeze(-1)
        low, high = box_c - spread, box_c + spread
        if self.norm == "l2":
            spread = self.eps[:, None] * torch.linalg.vector_norm(g, dim=-1)
            low, high = torch.maximum(low, ball_c[0] - spread), torch.minimum(high, ball_c[0] + spread)
        return low + const, high + const


# ---------------------------------------------------------------- relaxations of one activation


Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # lower w, b; upper w, b


def relax_relu(lo: torch.Tensor, up: torch.Tensor, alpha: torch.Tensor | None = None) -> Relaxation:
    """Lines a_l x + b_l <= relu(x) <= a_u x + b_u on [lo, up]: the chord above, a slope alpha in [0, 1]
    below (CROWN's default alpha: 1 where up > -lo, else 0)."""
    active, dead = lo >= 0, up <= 0
    unstable = ~(active | dead)
    chord = torch.where(unstable, up / (up - lo).clamp(min=1e-12), active.to(lo.dtype))
    upper_b = torch.where(unstable, -chord * lo, torch.zeros_like(lo))
    if alpha is None:
        alpha = (up > -lo).to(lo.dtype)
    lower_w = torch.where(unstable, alpha, active.to(lo.dtype))
    return lower_w, torch.zeros_like(lo), chord, upper_b


def _sigmoid_critical(k: torch.Tensor) -> torch.Tensor:
    """x >= 0 where sigmoid'(x) = k (k <= 1/4); sigmoid'(x) = s (1 - s)."""
    s = 0.5 * (1 + torch.sqrt((1 - 4 * k).clamp(min=0)))
    return torch.log(s / (1 - s).clamp(min=1e-30))


def relax_sigmoid(lo: torch.Tensor, up: torch.Tensor, alpha: torch.Tensor | None = None) -> Relaxation:
    """Two lines of the chord's slope k, each moved to touch sigmoid on [lo, up]: the intercept is the exact
    min (max) of sigmoid(x) - k x, found among the endpoints and the two points where sigmoid' = k."""
    width = up - lo
    mid = 0.5 * (lo + up)
    tangent = torch.sigmoid(mid) * (1 - torch.sigmoid(mid))
    k = torch.where(width > 1e-6, (torch.sigmoid(up) - torch.sigmoid(lo)) / width.clamp(min=1e-12), tangent)
    crit = _sigmoid_critical(k)
    points = torch.stack([lo, up, crit.clamp(lo, up), (-crit).clamp(lo, up)])
    gap = torch.sigmoid(points) - k * points
    return k, gap.amin(0), k, gap.amax(0)


RELAXATIONS: dict[str, Callable[..., Relaxation]] = {"relu": relax_relu, "sigmoid": relax_sigmoid}


# ---------------------------------------------------------------- IBP


def interval_forward(net: Network, lo: torch.Tensor, up: torch.Tensor, stop: int | None = None):
    """Intervals of every op's input (lists indexed like net.ops), pushed up to op `stop` (default: all)."""
    los, ups = [], []
    for op in net.ops[:stop]:
        los.append(lo)
        ups.append(up)
        if isinstance(op, RELAXED_OPS):  # monotone in every input
            lo, up = op.forward(lo), op.forward(up)
        else:
            mid, rad = op.forward((lo + up) / 2), op.forward_abs((up - lo) / 2)
            lo, up = mid - rad, mid + rad
    los.append(lo)
    ups.append(up)
    return los, ups


def ball_intervals(net: Network, ball: Ball):
    """interval_forward from the ball: its box's intervals, and for L2 the first relaxed op's input bounded
    from the ball itself (centre +- eps * each unit's row norm, where tighter), when the ops before it hold
    one weighted layer (the squared row norms are then that chain's forward_sq of ones). Over the ball's box
    a unit with row w ranges eps * |w|_1 either side, over the ball eps * |w|_2: up to sqrt(d) times less."""
    p = next((i for i, op in enumerate(net.ops) if isinstance(op, RELAXED_OPS)), None)
    if ball.norm != "l2" or p is None or sum(isinstance(op, (Linear, Conv)) for op in net.ops[:p]) != 1:
        return interval_forward(net, *ball.box())
    los, ups = interval_forward(net, *ball.box(), stop=p)
    centre, sq = ball.center, torch.ones_like(ball.center[:1])
    for op in net.ops[:p]:
        centre, sq = op.forward(centre), op.forward_sq(sq)
    radius = ball.eps.view(-1, *[1] * (centre.dim() - 1)) * sq.clamp_min(0).sqrt()
    lo, up = torch.maximum(los[p], centre - radius), torch.minimum(ups[p], centre + radius)
    rest_lo, rest_up = interval_forward(Network(net.ops[p:], net.shapes[p:]), lo, up)
    return los[:p] + rest_lo, ups[:p] + rest_up


def margin_spec(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """C (N, classes, classes) with row j = e_y - e_j: C z is every margin logit_y - logit_j."""
    eye = torch.eye(classes, dtype=dtype, device=labels.device)
    return eye[labels].unsqueeze(1) - eye.unsqueeze(0)


def ibp_margins(net: Network, ball: Ball, labels: torch.Tensor, bounds: dict | None = None) -> torch.Tensor:
    """IBP's lower bound on every margin, with the last Linear folded into the margins (tighter, same cost);
    with `bounds` (intermediate_bounds), the intervals start from the last relaxed op's, not the input's."""
    start = max(bounds) if bounds else 0
    chain = Network(net.ops[start:-1], net.shapes[start:-1])
    los, ups = interval_forward(chain, *bounds[start]) if bounds else ball_intervals(chain, ball)
    last = net.ops[-1]
    spec = margin_spec(labels, last.weight.shape[0], last.weight.dtype)
    w = spec @ last.weight
    mid, rad = (los[-1] + ups[-1]) / 2, (ups[-1] - los[-1]) / 2
    return (w @ mid.unsqueeze(-1)).squeeze(-1) - (w.abs() @ rad.unsqueeze(-1)).squeeze(-1) + spec @ last.bias


# ---------------------------------------------------------------- CROWN


def linear_bounds(
    net: Network,
    stop: int,
    a: torch.Tensor,
    ball: Ball,
    bounds: dict[int, tuple[torch.Tensor, torch.Tensor]],
    alphas: dict[int, torch.Tensor] | None = None,
    upper: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """min (and with `upper`, max) over the ball of A . (the input of op `stop`), A (N, K, *shape) or
    (1, K, *shape) for one matrix shared by every image: the linear bounds of every relaxed op before `stop`
    composed backwards, then optimised over the input set. Both sides share one matrix while every
    relaxation met has equal lower and upper slopes (sigmoid's; ReLU's and MaxPool's split them)."""
    a_lo, a_up = a, (a if upper else None)
    c_lo = c_up = a.new_zeros(a.shape[:2])
    prefix = net.prefix if net.prefix is not None and net.prefix[0] <= stop else None
    for i in range(stop - 1, prefix[0] - 1 if prefix else -1, -1):
        op = net.ops[i]
        if isinstance(op, RELAXED_OPS):
            a_lo, d_lo, a_up, d_up = op.backward_relaxed(a_lo, a_up, *bounds[i], (alphas or {}).get(i))
            c_lo = c_lo + d_lo
            c_up = c_up + d_up if upper else c_up
            continue
        shared = a_up is a_lo
        a_lo, bias = op.backward(a_lo)
        c_lo = c_lo + bias
        if upper:
            a_up, bias = (a_lo, bias) if shared else op.backward(a_up)
            c_up = c_up + bias
    ranged = (lambda m: ball.affine_range(m, *prefix[1:])) if prefix else ball.linear_range
    if not upper:
        return ranged(a_lo)[0] + c_lo, None
    if a_up is a_lo:
        low, high = ranged(a_lo)
        return low + c_lo, high + c_up
    return ranged(a_lo)[0] + c_lo, ranged(a_up)[1] + c_up


def backward_bound(net, stop: int, a: torch.Tensor, ball: Ball, bounds, alphas=None) -> torch.Tensor:
    """min over the ball of A . (the input of op `stop`) (see linear_bounds)."""
    return linear_bounds(net, stop, a, ball, bounds, alphas)[0]


@torch.no_grad()  # bounds carry no autograd history (alpha-CROWN's slopes re-enable it for themselves)
def intermediate_bounds(
    net: Network, ball: Ball, method: str, steps: int = 0, lr: float = 0.1
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Bounds of every relaxed op's input: IBP's, tightened by CROWN where the layer is narrow enough. Before
    a ReLU only the units IBP leaves unstable in an image are tightened (a stable unit's relaxation is
    exact whatever its bounds), except before the last relaxed op, whose bounds IBP's margins start from.
    alpha-CROWN with `steps` also optimises the lower slopes of the earlier ReLUs for those units' bounds."""
    los, ups = ball_intervals(net, ball)
    bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    last = max((i for i, op in enumerate(net.ops) if isinstance(op, RELAXED_OPS)), default=None)
    for i, op in enumerate(net.ops):
        if not isinstance(op, RELAXED_OPS):
            continue
        lo, up = los[i], ups[i]
        if method != "ibp" and lo[0].numel() <= CROWN_MAX_NEURONS:
            mask = torch.ones_like(lo, dtype=torch.bool).flatten(1)
            if isinstance(op, Activation) and op.kind == "relu" and i != last:
                mask = ((lo < 0) & (up > 0)).flatten(1)
            lo, up = _tighten(net, i, ball, bounds, lo, up, mask, steps if method == "alpha-crown" else 0, lr)
        bounds[i] = (lo, up)
    return bounds


def _unit_rows(mask: torch.Tensor, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The units (N or 1, k) to bound and which of them count (same shape): one set for every image (the
    union of the selections), or each image's own, padded with units it did not select."""
    if shared:
        units = mask.any(0).nonzero().squeeze(1).unsqueeze(0)
        return units, torch.ones_like(units, dtype=torch.bool)
    counts = mask.sum(1)
    units = mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, : int(counts.max())]
    return units, torch.arange(units.shape[1], device=mask.device) < counts[:, None]


def _tighten(
    net: Network,
    i: int,
    ball: Ball,
    bounds,
    lo: torch.Tensor,
    up: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 0,
    lr: float = 0.1,
):
    """lo, up (the input of op i) with the units `mask` (N, units) selects bounded by CROWN (optimised over
    the earlier ReLUs' lower slopes for `steps`), a chunk of units at a time. Before the first relaxed op,
    or where every image selects every unit, the rows are one matrix shared by every image (it stays shared
    down to the first relaxation met); otherwise each image bounds only its own units (past a relaxation
    every row is per image anyway, and the union of a batch's unstable units is far larger than any one
    image's)."""
    shared = not any(isinstance(op, RELAXED_OPS) for op in net.ops[:i]) or bool(mask.all())
    units, chosen = _unit_rows(mask, shared)
    width = max(int(np.prod(shape)) for shape in net.shapes[: i + 1])
    step = max(1, CHUNK_ENTRIES // (len(lo) * width))
    new_lo, new_up = lo.flatten(1).clone(), up.flatten(1).clone()
    for s in range(0, units.shape[1], step):
        idx, ok = units[:, s : s + step], chosen[:, s : s + step]
        rows = F.one_hot(idx, mask.shape[1]).to(lo.dtype).view(*idx.shape, *net.shapes[i])
        low, high = linear_bounds(net, i, rows, ball, bounds, upper=True)
        idx, ok = idx.expand(len(lo), -1), ok.expand(len(lo), -1)
        if steps:
            low, high = _optimised_slopes(net, i, rows, ball, bounds, (low, high), ok, steps, lr)
        old_lo, old_up = new_lo.gather(1, idx), new_up.gather(1, idx)
        new_lo.scatter_(1, idx, torch.where(ok, torch.maximum(old_lo, low), old_lo))
        new_up.scatter_(1, idx, torch.where(ok, torch.minimum(old_up, high), old_up))
    return new_lo.view_as(lo), new_up.view_as(up)


def _relu_slopes(net: Network, bounds, stop: int) -> dict[int, torch.Tensor]:
    """CROWN's lower slopes of every ReLU before op `stop`, as leaves to optimise (any value in [0, 1] is
    sound)."""
    return {
        i: relax_relu(*bounds[i])[0].detach().clone().requires_grad_(True)
        for i, op in enumerate(net.ops[:stop])
        if isinstance(op, Activation) and op.kind == "relu"
    }


def _tuned(
    alphas: dict[int, torch.Tensor], steps: int, lr: float, bound: Callable, loss: Callable
) -> Iterator:
    """`bound()` at each of `steps` Adam steps on the ReLUs' lower slopes, minimising `loss(bound())`, the
    slopes clamped to [0, 1] after each (so every value yielded is sound); yielded without autograd history."""
    opt = torch.optim.Adam(alphas.values(), lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            value = bound()
            opt.zero_grad()
            loss(value).backward()
        opt.step()
        with torch.no_grad():
            for alpha in alphas.values():
                alpha.clamp_(0, 1)
        yield value


def _optimised_slopes(net, i: int, rows, ball, bounds, start, ok, steps: int, lr: float):
    """Bounds of the rows' units (the input of op i) over the earlier ReLUs' lower slopes, optimised for the
    units `ok` marks; each unit keeps its tightest lower and upper bound seen (alpha-CROWN's intermediate
    bounds, with one set of slopes for both sides)."""
    low, high = start
    alphas = _relu_slopes(net, bounds, i)
    if not alphas:
        return low, high
    both = lambda: linear_bounds(net, i, rows, ball, bounds, alphas, upper=True)  # noqa: E731
    width = lambda b: torch.where(ok, b[1] - b[0], torch.zeros_like(b[0])).sum()  # noqa: E731
    for lower, upper in _tuned(alphas, steps, lr, both, width):
        low, high = torch.maximum(low, lower.detach()), torch.minimum(high, upper.detach())
    return low, high


def _alpha_crown(net, ball, spec, bounds, steps: int, lr: float) -> torch.Tensor:
    """Optimise the lower slopes of unstable ReLUs for the margins (every iterate is sound; keep the best)."""
    alphas = _relu_slopes(net, bounds, len(net.ops))
    best = backward_bound(net, len(net.ops), spec, ball, bounds).detach()
    if not alphas:
        return best
    margins = lambda: backward_bound(net, len(net.ops), spec, ball, bounds, alphas)  # noqa: E731
    for lower in _tuned(alphas, steps, lr, margins, lambda m: -m.sum()):
        best = torch.maximum(best, lower.detach())
    return best


def margin_bounds(
    net: Network, ball: Ball, labels: torch.Tensor, method: str = "crown", steps: int = 20, lr: float = 0.1
) -> torch.Tensor:
    """Lower bounds (N, classes) on logit_y - logit_j over the ball (row y is 0): > 0 for every j != y
    proves that no input of the ball changes the prediction from y. CROWN's and alpha-CROWN's are at least
    IBP's from the same intermediate bounds (both sound; IBP is often the tighter on IBP-trained nets)."""
    check_choice("method", method, METHODS)
    if method == "ibp":
        return ibp_margins(net, ball, labels)
    with torch.no_grad():
        bounds = intermediate_bounds(net, ball, method, steps, lr)
        if method == "crown":
            return crown_margins(net, ball, labels, bounds)
        last = net.ops[-1]
        spec = margin_spec(labels, last.weight.shape[0], last.weight.dtype)
        interval = ibp_margins(net, ball, labels, bounds)
    return torch.maximum(_alpha_crown(net, ball, spec, bounds, steps, lr), interval)


def crown_margins(net: Network, ball: Ball, labels: torch.Tensor, bounds: dict) -> torch.Tensor:
    """CROWN's last backward pass from given intermediate bounds (any that hold on the ball), or IBP's
    margins from them where those are the tighter."""
    last = net.ops[-1]
    spec = margin_spec(labels, last.weight.shape[0], last.weight.dtype)
    crown = backward_bound(net, len(net.ops), spec, ball, bounds)
    return torch.maximum(crown, ibp_margins(net, ball, labels, bounds))


def output_bounds(net: Network, ball: Ball, method: str = "crown") -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of every logit over the ball (for soundness checks and the MILP's big-M)."""
    check_choice("method", method, METHODS)
    if method == "ibp":
        los, ups = ball_intervals(net, ball)
        return los[-1], ups[-1]
    with torch.no_grad():
        bounds = intermediate_bounds(net, ball, method)
        k = net.shapes[-1][0]
        eye = torch.eye(k, dtype=ball.center.dtype, device=ball.center.device).unsqueeze(0)
        low, high = linear_bounds(net, len(net.ops), eye, ball, bounds, upper=True)
    return low, high


def worst_margin(net: Network, ball: Ball, labels: torch.Tensor, method: str = "crown") -> torch.Tensor:
    """The lowest margin bound per image (N,): > 0 proves that no input of the ball changes the label."""
    return worst_of(margin_bounds(net, ball, labels, method), labels)


def verified(net: Network, ball: Ball, labels: torch.Tensor, method: str = "crown") -> torch.Tensor:
    """True where every margin's lower bound is positive: no input of the ball changes the label."""
    return worst_margin(net, ball, labels, method) > 0


def _first_guess(net: Network, x: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """The clean margin to the runner-up over its gradient's dual norm: where a linear model would flip (a
    starting point for the search; nothing depends on it for soundness)."""
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        z = net.forward(xg)
        margin = z.gather(1, labels[:, None]).squeeze(1) - z.scatter(1, labels[:, None], -torch.inf).amax(1)
        (grad,) = torch.autograd.grad(margin.sum(), xg)
    dual = grad.flatten(1).abs().sum(1) if norm == "linf" else grad.flatten(1).norm(dim=1)
    return (margin.detach() / dual.clamp(min=1e-12)).clamp(min=0)


def certified_radius(
    net: Network,
    x: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    method: str = "crown",
    steps: int = 14,
    high: float | None = None,
    batch_size: int = 100,
    budget: float | None = None,
    guess: torch.Tensor | None = None,
    guard: float = 0.0,
    grow: float = 4.0,
) -> torch.Tensor:
    """The largest radius (to high / 2**steps) at which `method` proves the label, per image; each value
    returned was itself verified (0 for an image whose clean prediction is wrong).

    All images are searched at once, each dropping out when its bracket [proved, failed] is that narrow:
    regula falsi on the worst margin bound (Illinois variant, a bisection whenever a step did not halve the
    bracket), started from a linear model's flip distance (or `guess`); typically 6-8 bound evaluations
    instead of 14. With `budget` (coefficient entries, crown_entries' unit, per batch), a bound runs only
    if the rest pays for it, else its radius moves halfway down to the proved end (up to SHRINKS times: a
    bound costs more the larger its ball), else the search stops (each radius: the largest proved); `guard` keeps each step that share of the bracket away from its ends (a margin bound falls far
    faster above the radius than below it, and regula falsi then creeps up from the proved end) once both
    ends were tried; `grow` multiplies a proved radius while no larger one has failed."""
    check_choice("norm", norm, NORMS)
    high = check_float("high", MAX_RADIUS[norm] if high is None else high, low=0, strict_low=True)
    return torch.cat([
        _search(net, x[s : s + batch_size], labels[s : s + batch_size], norm, method, high, high / 2**steps,
                budget, None if guess is None else guess[s : s + batch_size], guard, grow)
        for s in range(0, len(x), batch_size)
    ])  # fmt: skip


SHRINKS = 6


def _search(
    net: Network,
    x,
    labels,
    norm: str,
    method: str,
    high: float,
    tol: float,
    budget: float | None = None,
    guess: torch.Tensor | None = None,
    guard: float = 0.0,
    grow: float = 4.0,
) -> torch.Tensor:
    """certified_radius on one batch. Per image a bracket lo (proved) < hi (not proved, or `high` untried)
    with the worst margin bound at each end (f_lo > 0 >= f_hi; nan: untried); `run` counts how many times in
    a row the same end moved (Illinois halves the other end's margin; three in a row: bisect)."""
    with torch.no_grad():
        z = net.forward(x)
    f_lo = z.gather(1, labels[:, None]).squeeze(1) - z.scatter(1, labels[:, None], -torch.inf).amax(1)
    lo, hi, f_hi = torch.zeros_like(f_lo), torch.full_like(f_lo, high), torch.full_like(f_lo, torch.nan)
    guess = (_first_guess(net, x, labels, norm) if guess is None else guess.to(f_lo)).clamp(tol, high)
    run = torch.zeros_like(f_lo)
    active = f_lo > 0
    while len(todo := (active & (hi - lo > tol)).nonzero().squeeze(1)):
        a, b, fa, fb, r = lo[todo], hi[todo], f_lo[todo], f_hi[todo], run[todo]
        untried = fb.isnan()
        eps = torch.where(r.abs() >= 3, (a + b) / 2, a + (b - a) * fa / (fa - fb))
        eps = torch.where(untried, guess[todo], eps)
        g = torch.where(untried, 0.0, guard) * (b - a)  # an untried end: the guess, not the bracket, decides
        eps = torch.minimum(torch.maximum(eps, a + g + tol / 4), b - g - tol / 4)
        ball = Ball(x[todo], eps, norm)
        for _ in range(SHRINKS if budget is not None else 0):  # a bound the budget cannot pay moves down
            if (cost := crown_entries(net, ball) * len(todo)) <= budget:
                break
            ball = Ball(x[todo], eps := (a + eps) / 2, norm)
        else:
            if budget is not None:
                break
        if budget is not None:
            budget -= cost
        f = worst_margin(net, ball, labels[todo], method)
        ok = f > 0
        r = torch.where(ok, r.clamp(min=0) + 1, r.clamp(max=0) - 1)
        r = torch.where(untried, torch.zeros_like(r), r)
        lo[todo], f_lo[todo] = torch.where(ok, eps, a), torch.where(ok, f, torch.where(r <= -2, fa / 2, fa))
        hi[todo], f_hi[todo] = torch.where(ok, b, eps), torch.where(ok, torch.where(r >= 2, fb / 2, fb), f)
        run[todo] = r
        guess[todo] = torch.where(
            untried & ok, (grow * eps).clamp(max=high), guess[todo]
        )  # grow until it fails
    return torch.where(active, lo, torch.zeros_like(lo))


def worst_of(lower: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The lowest margin bound per image (N,) of a (N, classes) table whose row y is the label's own."""
    return lower.scatter(1, labels[:, None], float("inf")).amin(1)


def budget_radius(
    net: Network, x: torch.Tensor, labels: torch.Tensor, norm: str, budget: float, high: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A proved radius per image from IBP's full search and CROWN's search within `budget` (coefficient
    entries, see crown_entries), and True where CROWN's (not IBP's) is the larger. CROWN's search stays
    below `high` (an attack's flip, one for every image: nothing above it is provable), starts from the
    geometric mean of twice IBP's radius (far too small on a PGD-trained net) and a linear model's flip
    (too large; a bound at a needlessly large radius also costs the most, every unit unstable), or `high`
    where that is smaller, and keeps each step a quarter of the bracket from its ends."""
    check_choice("norm", norm, NORMS)
    interval = certified_radius(net, x, labels, norm, "ibp", high=high)
    linear = _first_guess(net, x, labels, norm).clamp(min=2 * interval).clamp(max=high or MAX_RADIUS[norm])
    guess = torch.sqrt(2 * interval * linear)
    crown = certified_radius(
        net, x, labels, norm, "crown", high=high, budget=budget, guess=guess, guard=0.25, grow=2.0
    )
    return torch.maximum(interval, crown), crown > interval


def crown_entries(net: Network, ball: Ball | None = None) -> int:
    """The coefficient entries one CROWN bound moves per image, its cost (units tightened times the widths
    their rows pass back through, summed over the layers tightened, and the margins' own pass): with a
    ball, only the units IBP leaves unstable there as intermediate_bounds does, else every unit."""
    los, ups = ball_intervals(net, ball) if ball is not None else (None, None)
    last = max((i for i, op in enumerate(net.ops) if isinstance(op, RELAXED_OPS)), default=None)
    widths = np.cumsum([int(np.prod(shape)) for shape in net.shapes])
    total = net.shapes[-1][0] * int(widths[-1])
    for i, op in enumerate(net.ops):
        units = int(np.prod(net.shapes[i]))
        if not isinstance(op, RELAXED_OPS) or units > CROWN_MAX_NEURONS:
            continue
        if los is not None and isinstance(op, Activation) and op.kind == "relu" and i != last:
            units = float(((los[i] < 0) & (ups[i] > 0)).flatten(1).sum(1).float().mean())
        total += int(units * widths[i])
    return total
