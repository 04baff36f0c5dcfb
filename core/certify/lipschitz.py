"""Upper bounds on the Lipschitz constant of each layer of a network (the paper's Section 4.3, Table 5).

A network is walked as a chain of modules and cut into the paper's "layers": each starts at a weighted
module (convolution, fully connected layer, residual block) and keeps the activation, normalisation and
pooling that follow it. Within a layer, every maximal run of affine modules (convolution, BatchNorm,
linear, average pooling, flatten, eval-mode dropout) is one linear operator whose L2 operator norm is
computed exactly on the real input grid, with stride and padding, by power iteration on A^T A (A^T by autograd,
A by double backward). BatchNorm is
thereby folded into its convolution. Nonlinear modules contribute their Lipschitz constant: ReLU, ReLU6
and tanh 1, sigmoid 1/4, max pooling 1 when windows do not overlap and sqrt(windows covering a pixel)
when they do (AlexNet's 3x3/2 pools: 2; the paper counts every max pool as 1). A residual block
x + f(x) is bounded by 1 + bound(f). The network bound is the product over layers.

Power iteration converges from below; `conv_fft_norm` (the kernel's 2-D DFT on the input grid, exact for
stride-1 circular convolution) and the dense matrix (`dense_matrix`) check it in the tests.

Beside each bound, `local_lipschitz` gives an empirical local estimate: the spectral norm of the layer's
Jacobian at real activations (power iteration on J^T J), which can never exceed a valid upper bound.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import InvalidParameterError
from core.models.nets import Normalized


class Standardize(nn.Module):
    """(x - mean) / std per channel: the input normalisation folded into ImageNet models (affine)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


AFFINE = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.BatchNorm1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    Standardize,
)
ONE_LIPSCHITZ = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.LeakyReLU)


@dataclass
class LayerBound:
    """One of the paper's layers: its modules, its upper bound and the empirical local estimate."""

    label: str  # Conv1, FC2, Block3, ... (the paper's naming)
    path: str  # dotted module paths in the model
    modules: str  # what the layer is made of
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    upper_bound: float
    empirical: float | None = None  # max over images of the local Jacobian's spectral norm
    note: str = ""


def _flat(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    norms = _flat(v).norm(dim=1).clamp_min(1e-30)
    return v / norms.view(-1, *([1] * (v.dim() - 1)))


def _power_iteration(
    fn: Callable[[torch.Tensor], torch.Tensor],
    at: torch.Tensor,
    iters: int,
    tol: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-sample largest singular value of the Jacobian J of `fn` at `at` (a batch of independent
    samples), by power iteration on J^T J. J^T u is one backward pass; J v is the derivative of the
    (linear in u) <J^T u, v> with respect to u: the double-backward trick, cheaper on CPU than jvp."""
    with torch.enable_grad():
        h = at.detach().requires_grad_(True)
        out = fn(h)
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, h, u, create_graph=True)
        v = _normalise(torch.randn(at.shape, generator=generator, dtype=at.dtype).to(at.device))
        sigma = torch.zeros(at.shape[0], dtype=at.dtype, device=at.device)
        for _ in range(iters):
            (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
            new_sigma = _flat(jv).norm(dim=1)
            (jtjv,) = torch.autograd.grad(out, h, jv, retain_graph=True)
            v = _normalise(jtjv)
            converged = ((new_sigma - sigma).abs() <= tol * new_sigma.clamp_min(1e-30)).all()
            sigma = new_sigma
            if converged:
                break
    return sigma.detach()


def operator_norm(
    linear: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    iters: int = 500,
    tol: float = 1e-7,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> float:
    """L2 operator norm of a linear (or affine: its linear part) map on inputs of `input_shape`
    (without the batch dimension), by power iteration. Exact up to `tol`; converges from below."""
    at = torch.zeros((1, *input_shape), dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(seed)
    return float(_power_iteration(linear, at, iters, tol, gen)[0])


@torch.no_grad()
def dense_matrix(
    linear: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]
) -> torch.Tensor:
    """The explicit matrix of a linear map (columns = images of the basis vectors); small inputs only."""
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *input_shape)
    zero = linear(torch.zeros((1, *input_shape), dtype=torch.float64))
    return (linear(basis) - zero).flatten(1).T


def conv_fft_norm(weight: torch.Tensor, grid: tuple[int, int], groups: int = 1) -> float:
    """Exact operator norm of a stride-1 *circular* convolution on a `grid` (Sedghi et al., 2019): the
    largest singular value over frequencies of the (out x in) matrix of the kernel's 2-D DFT. For zero
    padding p it bounds the operator from above when the grid is the padded one (H + 2p, W + 2p)."""
    out_ch, in_per_group, kh, kw = weight.shape
    h, w = grid
    if kh > h or kw > w:
        raise InvalidParameterError(f"Kernel {kh}x{kw} is larger than the grid {h}x{w}.")
    spectrum = torch.fft.fft2(weight.detach().double(), s=(h, w))  # (out, in/g, h, w)
    spectrum = spectrum.view(groups, out_ch // groups, in_per_group, h, w).permute(3, 4, 0, 1, 2)
    return float(torch.linalg.svdvals(spectrum).max())


def _max_pool_constant(pool: nn.MaxPool2d) -> float:
    """sqrt(number of windows that can contain one pixel): 1 without overlap, 2 for 3x3 windows of stride 2."""

    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    (kh, kw), (sh, sw) = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size)
    return math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw))


def nonlinear_constant(module: nn.Module) -> tuple[float, str]:
    """The Lipschitz constant of a nonlinear module and a note on where it comes from."""
    if isinstance(module, ONE_LIPSCHITZ):
        return 1.0, ""
    if isinstance(module, nn.Sigmoid):
        return 0.25, "sigmoid' <= 1/4"
    if isinstance(module, nn.MaxPool2d):
        c = _max_pool_constant(module)
        return c, "" if c == 1 else f"overlapping max pool: x{c:g} (the paper counts 1)"
    raise InvalidParameterError(f"No Lipschitz constant known for {type(module).__name__}.")


# ---------------------------------------------------------------------------------------------------
# Walking a network as a chain of modules


def _is_residual(module: nn.Module) -> bool:
    """A block x -> [x +] f(x): torchvision's InvertedResidual, timm's InvertedResidual and
    DepthwiseSeparableConv (EfficientNet-Lite0)."""
    return (hasattr(module, "use_res_connect") and hasattr(module, "conv")) or hasattr(module, "has_skip")


def _has_skip(module: nn.Module) -> bool:
    return bool(getattr(module, "use_res_connect", False) or getattr(module, "has_skip", False))


def _residual_body(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The f of a residual block as a chain (timm's blocks: their children in order; the drop path is the
    identity in eval mode and only sits on the skip branch)."""
    if hasattr(module, "conv"):
        return module_chain(module.conv)
    return [
        item
        for name, child in module.named_children()
        if name != "drop_path"
        for item in module_chain(child, f"{name}.")
    ]


def _split_batchnorm_act(module: nn.BatchNorm2d, prefix: str) -> list[tuple[str, nn.Module]]:
    """timm's BatchNormAct2d (a BatchNorm2d subclass that also applies dropout and an activation) as a plain,
    affine BatchNorm2d followed by its dropout and activation."""
    plain = nn.BatchNorm2d(
        module.num_features, module.eps, affine=module.affine, track_running_stats=module.track_running_stats
    )
    plain.load_state_dict(module.state_dict(prefix="", keep_vars=False), strict=False)
    plain = plain.to(device=module.running_mean.device, dtype=module.running_mean.dtype).eval()
    return [(f"{prefix}bn", plain), (f"{prefix}drop", module.drop), (f"{prefix}act", module.act)]


def _is_weighted(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) or _is_residual(module)


def _is_torchvision(model: nn.Module, name: str) -> bool:
    """Whether `model` is a torchvision.models.<name>. Looked up in sys.modules, not imported: a model can be
    one only once torchvision is loaded, and the import costs an MNIST-only process ~170 MB (issue 25)."""
    torchvision = sys.modules.get("torchvision")
    return torchvision is not None and isinstance(model, getattr(torchvision.models, name))


def module_chain(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model as a flat list of (dotted path, module) in execution order, for the architectures of the
    zoo (MLPs, the MNIST CNN, torchvision AlexNet and MobileNetV2, timm's EfficientNet-Lite0, with folded
    normalisation)."""
    if isinstance(model, Normalized):
        return [
            (f"{prefix}normalize", Standardize(model.mean, model.std)),
            *module_chain(model.net, f"{prefix}net."),
        ]
    if _is_torchvision(model, "AlexNet"):
        return [
            *module_chain(model.features, f"{prefix}features."),
            (f"{prefix}avgpool", model.avgpool),
            (f"{prefix}flatten", nn.Flatten()),
            *module_chain(model.classifier, f"{prefix}classifier."),
        ]
    if _is_torchvision(model, "MobileNetV2"):
        return [
            *module_chain(model.features, f"{prefix}features."),
            (f"{prefix}pool", nn.AdaptiveAvgPool2d(1)),
            (f"{prefix}flatten", nn.Flatten()),
            *module_chain(model.classifier, f"{prefix}classifier."),
        ]
    if _is_residual(model):
        return [(prefix.rstrip("."), model)]
    if isinstance(model, nn.BatchNorm2d) and hasattr(model, "act"):
        return _split_batchnorm_act(model, prefix)
    children = list(model.named_children())
    if not children:
        return [(prefix.rstrip("."), model)]
    return [item for name, child in children for item in module_chain(child, f"{prefix}{name}.")]


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        kind = "depthwise conv" if module.groups > 1 and module.groups == module.in_channels else "conv"
        return (
            f"{kind} {module.in_channels}->{module.out_channels} k{module.kernel_size[0]} s{module.stride[0]}"
        )
    if isinstance(module, nn.Linear):
        return f"linear {module.in_features}->{module.out_features}"
    if _is_residual(module):
        kind = "depthwise separable" if "DepthwiseSeparable" in type(module).__name__ else "inverted residual"
        return kind + (" + skip" if _has_skip(module) else "")
    if isinstance(module, nn.MaxPool2d):
        return f"maxpool {module.kernel_size}/{module.stride}"
    return type(module).__name__.lower()


def _chain_bound(
    chain: list[tuple[str, nn.Module]], x: torch.Tensor, iters: int, tol: float
) -> tuple[float, torch.Tensor, list[str]]:
    """Upper bound of a chain (product of exact affine-run norms and nonlinear constants), its output on
    the probe `x`, and the notes gathered on the way."""
    bound, notes, run = 1.0, [], []

    def close_run(inp: torch.Tensor) -> float:
        if not run:
            return 1.0
        seq = nn.Sequential(*run).double()
        norm = operator_norm(seq, tuple(inp.shape[1:]), iters=iters, tol=tol, device=inp.device)
        run.clear()
        return norm

    run_input = x
    for _, module in chain:
        if isinstance(module, AFFINE):
            if not run:
                run_input = x
            run.append(module)
        elif _is_residual(module):
            bound *= close_run(run_input)
            inner, _, inner_notes = _chain_bound(_residual_body(module), x, iters, tol)
            bound *= inner + (1.0 if _has_skip(module) else 0.0)
            notes += inner_notes
        else:
            bound *= close_run(run_input)
            c, note = nonlinear_constant(module)
            bound *= c
            if note:
                notes.append(note)
        x = module(x)
    bound *= close_run(run_input)
    return bound, x, notes


def _groups(chain: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Cut the chain into the paper's layers: a new layer at each weighted module (with the flatten
    that feeds it, if any)."""
    groups: list[list[tuple[str, nn.Module]]] = []
    for i, (path, module) in enumerate(chain):
        feeds_weighted = (
            isinstance(module, nn.Flatten) and i + 1 < len(chain) and _is_weighted(chain[i + 1][1])
        )
        starts = feeds_weighted or (
            _is_weighted(module) and not (i and isinstance(chain[i - 1][1], nn.Flatten))
        )
        if starts or not groups:
            groups.append([])
        groups[-1].append((path, module))
    return groups


def _label(group: list[tuple[str, nn.Module]], counters: dict[str, int]) -> str:
    first = next((m for _, m in group if _is_weighted(m)), None)
    if isinstance(first, nn.Conv2d):
        kind = "Conv"
    elif isinstance(first, nn.Linear):
        kind = "FC"
    elif _is_residual(first):
        kind = "Block"
    else:
        return "Input"
    counters[kind] = counters.get(kind, 0) + 1
    return f"{kind}{counters[kind]}"


def local_lipschitz(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, iters: int = 30, seed: int = 0
) -> torch.Tensor:
    """Per-input spectral norm of the Jacobian of `fn` (a per-sample map) at each input: the largest local
    stretch factor, a lower bound of the Lipschitz constant (power iteration with autograd)."""
    gen = torch.Generator().manual_seed(seed)
    return _power_iteration(fn, inputs, iters, 1e-6, gen)


def _without_inplace(model: nn.Module) -> nn.Module:
    """A double-precision copy (for exact norms) whose activations do not overwrite their input."""
    model = copy.deepcopy(model).double().eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def network_bounds(
    model: nn.Module,
    images: torch.Tensor,
    iters: int = 300,
    tol: float = 1e-6,
    empirical_iters: int = 30,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[LayerBound], dict]:
    """Per-layer upper bounds and empirical local estimates for `model` on `images` (N, C, H, W) in [0, 1].

    Returns the layers and a summary: the network bound (product of the layer bounds) and the largest
    local Jacobian norm of the whole network over the images."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise InvalidParameterError("Lipschitz estimates need a non-empty batch of images (N, C, H, W).")
    model = _without_inplace(model)
    device = next(model.parameters()).device
    x = images.to(device=device, dtype=torch.float64)
    chain: list[tuple[str, nn.Module]] = []
    with torch.no_grad():
        reference = model(x)
        probe = x
        for path, module in module_chain(model):
            if isinstance(module, nn.Linear) and probe.dim() > 2:  # MLPs flatten inside forward()
                chain.append((f"{path}:flatten", nn.Flatten()))
                probe = probe.flatten(1)
            chain.append((path, module))
            probe = module(probe)
    if not torch.allclose(probe, reference, atol=1e-6, rtol=1e-5):
        raise InvalidParameterError(f"Lipschitz bounds do not know the architecture {type(model).__name__}.")

    groups = _groups(chain)
    counters: dict[str, int] = {}
    layers: list[LayerBound] = []
    h = x
    for i, group in enumerate(groups):
        if progress:
            progress(i / (len(groups) + 1), f"layer {i + 1}/{len(groups)}")
        with torch.no_grad():
            bound, _, notes = _chain_bound(group, h[:1], iters, tol)
        fn = nn.Sequential(*(m for _, m in group))
        empirical = float(local_lipschitz(fn, h, empirical_iters).max())
        with torch.no_grad():
            out = fn(h)
        layers.append(
            LayerBound(
                label=_label(group, counters),
                path=", ".join(p for p, _ in group),
                modules=" + ".join(_describe(m) for _, m in group),
                input_shape=tuple(h.shape[1:]),
                output_shape=tuple(out.shape[1:]),
                upper_bound=bound,
                empirical=empirical,
                note="; ".join(dict.fromkeys(notes)),
            )
        )
        h = out
    if progress:
        progress(len(groups) / (len(groups) + 1), "whole network")
    whole = local_lipschitz(model, x, empirical_iters)
    summary = {
        "network_bound": math.prod(layer.upper_bound for layer in layers),
        "network_empirical": float(whole.max()),
        "network_empirical_mean": float(whole.mean()),
        "n_images": int(x.shape[0]),
    }
    return layers, summary
