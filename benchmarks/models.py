"""Your own model: PGD-40 on the ONNX-converted and the TorchScript fc100-100-10 against the native module,
timed in one alternating run (goal: within 1.05x), and the time to register and first-load each format.
TorchScript runs under torch's default (profiling) graph executor: switching its optimisations off (a
process-wide flag) measured no faster side by side on 1000 images, so the lab leaves it on.

    python benchmarks/models.py [--quick] [--json] [--save card.json]

The exports are made here from the zoo model; registering and loading run in a private cache folder.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import harness  # first: puts the project root on sys.path  # isort: skip
import torch

from core.attacks import make_attack
from core.data import load_mnist
from core.models import load
from core.models.zoo import add_model

MODEL = "fc100-100-10"
CARD = 'input = [1, 28, 28]\nclasses = ["0","1","2","3","4","5","6","7","8","9"]\ndomain = "mnist"\n'


def export(native: torch.nn.Module, folder: Path) -> dict[str, Path]:
    x = torch.zeros(1, 1, 28, 28, device=next(native.parameters()).device)
    paths = {"onnx": folder / "net.onnx", "torchscript": folder / "net.pt"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            native, x, paths["onnx"], dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
        )
        torch.jit.save(torch.jit.trace(native, x), paths["torchscript"])
    for path in paths.values():
        path.with_suffix(".toml").write_text(CARD)
    return paths


def main() -> None:
    args = harness.parser(__doc__).parse_args()
    harness.use_device(args.device)
    harness.set_threads(1)
    n, rounds = (20, 2) if args.quick else (1000, 15)
    data = load_mnist("test")
    x, y = data.images[:n].to(harness.DEVICE), data.labels[:n].to(harness.DEVICE)
    native = load(MODEL, harness.DEVICE)
    with harness.private_cache("bench-models-"), tempfile.TemporaryDirectory() as tmp:
        paths = export(native, Path(tmp))
        setup = {}
        nets = {"native": native}
        for kind, path in paths.items():
            start = time.perf_counter()
            add_model(f"mine-{kind}", path, allow_code=True)
            registered = time.perf_counter() - start
            start = time.perf_counter()
            nets[kind] = load(f"mine-{kind}", harness.DEVICE)
            setup[kind] = {"register_s": registered, "first_load_s": time.perf_counter() - start}
        attacks = {
            k: make_attack("pgd", net, harness.DEVICE, eps=0.1, steps=40, seed=0) for k, net in nets.items()
        }
        times = harness.alternate({k: (lambda a=a: a.run(x, y)) for k, a in attacks.items()}, rounds)
    med = {k: harness.median(v) for k, v in times.items()}
    rows = [
        [k, f"{med[k]:.3f}", f"{med[k] / med['native']:.2f}x",
         f"{setup[k]['register_s']:.2f}" if k in setup else "", f"{setup[k]['first_load_s']:.2f}" if k in setup else ""]
        for k in nets
    ]  # fmt: skip
    result = {
        "benchmark": "models", "model": MODEL, "attack": "pgd", "steps": 40, "n": n, "rounds": rounds,
        "median_s": med, "ratio_to_native": {k: med[k] / med["native"] for k in med}, "setup": setup,
        "machine": harness.machine(),
    }  # fmt: skip
    text = harness.table(["module", "PGD-40 median s", "vs native", "register s", "first load s"], rows)
    text = f"PGD-40 on {n} MNIST images, {rounds} alternating rounds\n\n{text}"
    harness.emit(result, args.json, text, args.save, "models", args.update_docs)


if __name__ == "__main__":
    main()
