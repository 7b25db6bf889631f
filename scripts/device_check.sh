#!/usr/bin/env bash
# The GPU measurements the project needs, from the repository root with ../shared beside it. Prints Markdown
# tables; copy them into docs/performance.md and docs/training.md with the card's name.
#   bash scripts/device_check.sh speed      inference and training-step speed of every path (about 5 min on an H100)
#   bash scripts/device_check.sh training   a few hundred steps of RAMiT x2 training, fp32 and bf16 (about 5 min)
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if ! $python -c "import ramit_hf" 2>/dev/null; then
  $python -m pip install --quiet -e ".[train]" 2>&1 | tail -2
fi
$python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
case "${1:-speed}" in
  speed)
    # "auto" is what users get: on CUDA it resolves to the fused computation (never banded); every row's parity
    # against faithful is the table's max-difference column
    echo "## Inference, RAMiT x2, batch 1: eager computations"
    timeout 220 $python scripts/benchmark.py --device cuda --sizes 128 256 512 --repeats 20 --warmup 3 \
      --paths faithful auto fused-bf16
    echo "## Inference, RAMiT x2, batch 1: torch.compile and CUDA graphs of the fused computation"
    timeout 180 $python scripts/benchmark.py --device cuda --sizes 256 --repeats 20 --warmup 3 --no-memory \
      --paths faithful fused-compile fused-cudagraph
    echo "## Training step, RAMiT x2, batch 32, 64x64 LR patches"
    timeout 180 $python scripts/benchmark.py --device cuda --train --steps 200 --paths faithful fused fused-bf16
    ;;
  training)
    timeout 330 $python scripts/gpu_training_check.py
    ;;
  *)
    echo "usage: $0 speed|training" >&2
    exit 2
    ;;
esac
