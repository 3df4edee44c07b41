# Sourced by the GPU scripts (from the repo root): offline Hugging Face settings and the python to use in $PY.
#   WHEELHOUSE=dir   air-gapped node with its own CUDA torch/lightning/transformers: install the wheels in `dir` (the
#                    packages of requirements.txt it lacks; `pip download --no-deps`) into a scratch directory
#                    (GPU_CHECK_SITE, default /tmp/paradiffusion-site) and use the system python3;
#   otherwise        .venv (built by `make venv` if missing).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -n "${WHEELHOUSE:-}" ]; then
  PY=python3
  SITE=${GPU_CHECK_SITE:-/tmp/paradiffusion-site}
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELHOUSE"/*.whl
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  if [ ! -x .venv/bin/python ]; then make venv; fi
  PY=.venv/bin/python
fi
