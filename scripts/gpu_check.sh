#!/usr/bin/env bash
# Every GPU check in one go (< 10 minutes on one H100): run from the repo root on a machine with a CUDA GPU.
#   bash scripts/gpu_check.sh            # builds .venv (CUDA torch wheel from PyPI) unless it exists
# Checks: DeepSpeed ZeRO-2 fit + resume, ZeRO-3 sharded build (configure_model), bf16-mixed, the SmolLM2 encoder
# (GGUF) with LoRA on the GPU. Output: the pytest summary; logs under runs/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then make venv; fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
timeout 540 .venv/bin/python -m pytest -m gpu -v -p no:cacheprovider tests/test_gpu.py "$@"
