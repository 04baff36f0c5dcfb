#!/usr/bin/env bash
# Make the peers' environment for the benchmarks: torchattacks, Foolbox 3, ART (and advertorch if it installs).
#
# The peers never go into the project's environment: torchattacks pins an old `requests` that conflicts with
# Streamlit. The venv sees the system site-packages, so it reuses the installed torch (same build, same kernels
# for every contender); whatever the peers pin is installed inside the venv only and shadows the system copy there.
#
# Usage: bash benchmarks/setup_peers.sh [VENV_DIR]   (default: ~/.cache/intriguing/bench-venv)
set -euo pipefail

VENV="${1:-${INTRIGUING_BENCH_VENV:-$HOME/.cache/intriguing/bench-venv}}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
# Upgrading pip inside the venv only; the project's own pip is untouched.
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torchattacks foolbox adversarial-robustness-toolbox

# advertorch 0.2.3 (2020) is the only release; it may not import on a modern torch. Try it, never fail on it.
if "$VENV/bin/python" -m pip install -q --no-deps advertorch; then
  "$VENV/bin/python" - <<'PY' || echo "advertorch installed but does not import on this torch (see above)"
import advertorch.attacks  # noqa: F401
print("advertorch imports")
PY
else
  echo "advertorch did not install"
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "torchattacks", "foolbox", "eagerpy", "adversarial-robustness-toolbox", "advertorch", "requests", "numpy"):
    try:
        print(f"{name:32s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:32s} (absent)")
PY
echo "peer venv ready: $VENV/bin/python"
