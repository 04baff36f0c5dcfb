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

from collections.abc import Callable
from dataclasses import dataclass

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

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A W, A b) for a coefficient matrix A (N, K, out)."""
        return a @ self.weight, a @ self.bias


@dataclass
class Conv:
    """A 2-d convolution (its module's weight, bias, stride, padding, dilation, groups)."""

    conv: nn.Conv2d
    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(r, c.weight.abs(), None, c.stride, c.padding, c.dilation, c.groups)

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.conv
        n, k = a.shape[:2]
        out_shape = a.shape[2:]
        flat = a.reshape(n * k, *out_shape)
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

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a * self.scale, (a * self.shift).flatten(2).sum(-1)


@dataclass
class Flatten:
    in_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_abs(self, r: torch.Tensor) -> torch.Tensor:
        return r.flatten(1)

    def backward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a.reshape(*a.shape[:2], *self.in_shape), a.new_zeros(a.shape[:2])


@dataclass
class Activation:
    """An elementwise monotone activation: 'relu' or 'sigmoid'."""

    kind: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.kind == "relu" else torch.sigmoid(x)


Op = Linear | Conv | Affine | Flatten | Activation
LINEAR_OPS = (Linear, Conv, Affine, Flatten)


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
    if isinstance(module, nets.SmallCNN):
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
    if isinstance(layer, nn.Dropout | nn.Identity):
        return None
    raise UnsupportedLayerError(
        f"unsupported layer: {type(layer).__name__} (bounds cover Linear, Conv2d, ReLU, Sigmoid, Flatten, "
        "BatchNorm and the input normalisation)."
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
        return cls(ops, shapes)

    @property
    def activations(self) -> set[str]:
        return {op.kind for op in self.ops if isinstance(op, Activation)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op.forward(x)
        return x


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

    def min_linear(self, a: torch.Tensor) -> torch.Tensor:
        """min over the set of a . x, for a (N, K, *input): exact for Linf; for L2 the larger of the
        ball's and the box's bound (each set contains the intersection, so both are sound)."""
        lo, hi = (b.flatten(1).unsqueeze(-1) for b in self.box())
        flat = a.flatten(2)
        best = (flat @ ((lo + hi) / 2)).squeeze(-1) - (flat.abs() @ ((hi - lo) / 2)).squeeze(-1)
        if self.norm == "l2":
            centre = self.center.flatten(1).unsqueeze(-1)
            ball = (flat @ centre).squeeze(-1) - self.eps[:, None] * flat.norm(dim=-1)
            best = torch.maximum(best, ball)
        return best


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
        if isinstance(op, Activation):
            lo, up = op.forward(lo), op.forward(up)
        else:
            mid, rad = op.forward((lo + up) / 2), op.forward_abs((up - lo) / 2)
            lo, up = mid - rad, mid + rad
    los.append(lo)
    ups.append(up)
    return los, ups


def margin_spec(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """C (N, classes, classes) with row j = e_y - e_j: C z is every margin logit_y - logit_j."""
    eye = torch.eye(classes, dtype=dtype, device=labels.device)
    return eye[labels].unsqueeze(1) - eye.unsqueeze(0)


def ibp_margins(net: Network, ball: Ball, labels: torch.Tensor) -> torch.Tensor:
    """IBP's lower bound on every margin, with the last Linear folded into the margins (tighter, same cost)."""
    los, ups = interval_forward(net, *ball.box(), stop=-1)
    last = net.ops[-1]
    spec = margin_spec(labels, last.weight.shape[0], last.weight.dtype)
    w = spec @ last.weight
    mid, rad = (los[-1] + ups[-1]) / 2, (ups[-1] - los[-1]) / 2
    return (w @ mid.unsqueeze(-1)).squeeze(-1) - (w.abs() @ rad.unsqueeze(-1)).squeeze(-1) + spec @ last.bias


# ---------------------------------------------------------------- CROWN


def backward_bound(
    net: Network,
    stop: int,
    a: torch.Tensor,
    ball: Ball,
    bounds: dict[int, tuple[torch.Tensor, torch.Tensor]],
    alphas: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """min over the ball of A . (the input of op `stop`), A (N, K, *shape): the linear bounds of every
    activation before `stop` composed backwards, then minimised over the input set."""
    const = a.new_zeros(a.shape[:2])
    for i in range(stop - 1, -1, -1):
        op = net.ops[i]
        if isinstance(op, Activation):
            lower_w, lower_b, upper_w, upper_b = RELAXATIONS[op.kind](*bounds[i], (alphas or {}).get(i))
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            const = const + (pos * lower_b.unsqueeze(1) + neg * upper_b.unsqueeze(1)).flatten(2).sum(-1)
            a = pos * lower_w.unsqueeze(1) + neg * upper_w.unsqueeze(1)
        else:
            a, bias = op.backward(a)
            const = const + bias
    return ball.min_linear(a) + const


def intermediate_bounds(
    net: Network, ball: Ball, method: str
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Bounds of every activation's input: IBP's, tightened by CROWN where the layer is narrow enough."""
    los, ups = interval_forward(net, *ball.box())
    bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, op in enumerate(net.ops):
        if not isinstance(op, Activation):
            continue
        lo, up = los[i], ups[i]
        shape = net.shapes[i]
        n_units = lo[0].numel()
        if method != "ibp" and n_units <= CROWN_MAX_NEURONS:
            eye = torch.eye(n_units, dtype=lo.dtype, device=lo.device).view(n_units, *shape)
            a = torch.cat([eye, -eye]).unsqueeze(0).expand(len(lo), -1, *shape)
            both = backward_bound(net, i, a, ball, bounds)
            lo = torch.maximum(lo, both[:, :n_units].view_as(lo))
            up = torch.minimum(up, -both[:, n_units:].view_as(up))
        bounds[i] = (lo, up)
    return bounds


def _alpha_crown(net, ball, spec, bounds, steps: int, lr: float) -> torch.Tensor:
    """Optimise the lower slopes of unstable ReLUs for the margins (every iterate is sound; keep the best)."""
    alphas = {
        i: relax_relu(*bounds[i])[0].detach().clone().requires_grad_(True)
        for i, op in enumerate(net.ops)
        if isinstance(op, Activation) and op.kind == "relu"
    }
    best = backward_bound(net, len(net.ops), spec, ball, bounds).detach()
    if not alphas:
        return best
    opt = torch.optim.Adam(alphas.values(), lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            lower = backward_bound(net, len(net.ops), spec, ball, bounds, alphas)
            opt.zero_grad()
            (-lower.sum()).backward()
        opt.step()
        with torch.no_grad():
            for alpha in alphas.values():
                alpha.clamp_(0, 1)
            best = torch.maximum(best, lower.detach())
    return best


def margin_bounds(
    net: Network, ball: Ball, labels: torch.Tensor, method: str = "crown", steps: int = 20, lr: float = 0.1
) -> torch.Tensor:
    """Lower bounds (N, classes) on logit_y - logit_j over the ball (row y is 0): > 0 for every j != y
    proves that no input of the ball changes the prediction from y."""
    check_choice("method", method, METHODS)
    if method == "ibp":
        return ibp_margins(net, ball, labels)
    with torch.no_grad():
        bounds = intermediate_bounds(net, ball, method)
        last = net.ops[-1]
        spec = margin_spec(labels, last.weight.shape[0], last.weight.dtype)
        if method == "crown":
            return backward_bound(net, len(net.ops), spec, ball, bounds)
    return _alpha_crown(net, ball, spec, bounds, steps, lr)


def output_bounds(net: Network, ball: Ball, method: str = "crown") -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of every logit over the ball (for soundness checks and the MILP's big-M)."""
    check_choice("method", method, METHODS)
    if method == "ibp":
        los, ups = interval_forward(net, *ball.box())
        return los[-1], ups[-1]
    with torch.no_grad():
        bounds = intermediate_bounds(net, ball, method)
        k = net.shapes[-1][0]
        eye = torch.eye(k, dtype=ball.center.dtype, device=ball.center.device)
        a = torch.cat([eye, -eye]).unsqueeze(0).expand(len(ball.center), -1, -1)
        both = backward_bound(net, len(net.ops), a, ball, bounds)
    return both[:, :k], -both[:, k:]


def verified(net: Network, ball: Ball, labels: torch.Tensor, method: str = "crown") -> torch.Tensor:
    """True where every margin's lower bound is positive: no input of the ball changes the label."""
    lower = margin_bounds(net, ball, labels, method)
    lower = lower.scatter(1, labels[:, None], float("inf"))
    return lower.amin(1) > 0


def certified_radius(
    net: Network,
    x: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    method: str = "crown",
    steps: int = 14,
    high: float | None = None,
    batch_size: int = 250,
) -> torch.Tensor:
    """The largest radius (to high / 2**steps) at which `method` proves the label, per image, by bisection;
    each value returned was itself verified (0 for an image whose clean prediction is wrong)."""
    check_choice("norm", norm, NORMS)
    high = check_float("high", MAX_RADIUS[norm] if high is None else high, low=0, strict_low=True)
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], labels[start : start + batch_size]
        with torch.no_grad():
            correct = net.forward(xb).argmax(1) == yb
        lo = torch.zeros(len(xb), dtype=xb.dtype, device=xb.device)
        hi = torch.full_like(lo, high)
        for _ in range(steps):
            mid = (lo + hi) / 2
            ok = verified(net, Ball(xb, mid, norm), yb, method) & correct
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        out.append(lo)
    return torch.cat(out)
