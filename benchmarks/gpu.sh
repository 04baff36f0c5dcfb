#!/usr/bin/env bash
# The one GPU script: for a session that is lent a CUDA machine. Runs the CUDA tests, measures PGD and
# L-BFGS against their forward+backward limits and CERTIFY at n = 100,000, and computes Table 1 with the
# paper's full search and the smoothing curves on 1000 images per sigma. Stores the cards under
# docs/results/ (performance/gpu-*.json, table1/, smoothing/) and re-renders the docs from them.
# Absolute times hold only on that machine; each card names its GPU.
#
#   bash benchmarks/gpu.sh            # from the repository root, with MNIST and the zoo checkpoints present
#   bash benchmarks/gpu.sh pgd table1 # only the steps named (a rerun of those that failed)
#
# On a machine that holds a copy of the tree rather than the checkout, set INTRIGUING_COMMIT to the commit
# the copy was made from: the cards record it.
#
# Each step runs under its own time limit and the script goes on after a failed one (it says which failed
# and exits non-zero at the end), so one broken step does not cost the others' device time.
set -uo pipefail
cd "$(dirname "$0")/.."
export INTRIGUING_OFFLINE=1 PYTHONUNBUFFERED=1
failed=()
only=" $* "
step() {  # step SECONDS NAME COMMAND...: run one step under a time limit, log how long it took
  local limit=$1 name=$2
  shift 2
  [[ "$only" == "  " || "$only" == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit} s)"
  local began=$SECONDS
  timeout "$limit" "$@" || failed+=("$name (exit $?)")
  echo "=== $name: $((SECONDS - began)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step 90 cuda-tests python -m pytest tests/test_attacks_cuda.py tests/test_devices.py -q -n 0 -p no:randomly -p no:cacheprovider
# PGD within 1.05x of its limit at batch 10,000 (goal); the conv net at a GPU-sized batch too.
step 90 pgd python benchmarks/attacks.py --device cuda --no-peers --only pgd --batch 10000 --conv-batch 10000 \
  --threads 1 --update-docs --card gpu-attacks-pgd
# The paper's L-BFGS (9 targets, 10 rounds of c) on 10,000 images; five for the scipy reference.
step 120 lbfgs python benchmarks/attacks.py --device cuda --no-peers --only lbfgs --lbfgs-images 10000 \
  --reference-images 5 --update-docs --card gpu-attacks-lbfgs
# Table 1 of record: the paper's full search (9 targets, 10 values of c, 100 iterations), all 10,000 images.
step 150 table1 python -m core.cli reproduce table1 --n 10000 --full-search --device cuda --update-docs
# CERTIFY at n = 100,000 per image, the MLP and the CNN both at the full n, at GPU-sized batches.
step 60 smoothing-bench python benchmarks/smoothing.py --device cuda --cnn-samples 100000 \
  --batches 1000,10000,100000 --update-docs --card gpu-smoothing
# The certified curves on the first 1000 test images for every sigma, CERTIFY at n = 100,000.
step 120 smoothing python -m core.cli reproduce smoothing --n 1000 --device cuda --update-docs
ls -l docs/results/performance/ docs/results/table1/ docs/results/smoothing/
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
