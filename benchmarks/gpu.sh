#!/usr/bin/env bash
# The one GPU script: for a session that is lent a CUDA machine. Measures PGD and L-BFGS against their
# forward+backward limits on the GPU, runs the CUDA tests, and stores the cards under
# docs/results/performance/ (gpu-attacks*.json). Absolute times hold only on that machine.
#
#   bash benchmarks/gpu.sh            # from the repository root, with MNIST and the zoo checkpoints present
#
# Not yet in it (not built): Table 1's full search on the GPU and CERTIFY with 100,000 samples.
set -euo pipefail
cd "$(dirname "$0")/.."
export INTRIGUING_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -m pytest tests/test_attacks_cuda.py -q
# PGD within 1.05x of its limit at batch 10,000 (goal); the conv net at a GPU-sized batch too.
python benchmarks/attacks.py --device cuda --no-peers --only pgd --batch 10000 --conv-batch 10000 \
  --threads 1 --update-docs --card gpu-attacks-pgd
# The paper's L-BFGS (9 targets, 10 rounds of c) on 10,000 images; five for the scipy reference.
python benchmarks/attacks.py --device cuda --no-peers --only lbfgs --lbfgs-images 10000 \
  --reference-images 5 --update-docs --card gpu-attacks-lbfgs
ls -l docs/results/performance/
