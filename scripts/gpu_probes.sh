#!/usr/bin/env bash
# Stage-1 probes on one GPU: does the tiny stage-1 model learn to read its text given far more steps than 2 CPU cores
# allow, and which loss weighting / conditioning gets there first? Five `scripts/stage_probe.py` runs share the GPU,
# each trains for MAX_TIME from scratch on the same stage-0 LM and validates every VAL_EVERY steps (faithfulness and
# `val/text_use` in TensorBoard); at the end each scores 48 `heldout` samples and measures text use.
#   LM=runs/full/stage0/hf MAX_TIME=00:00:05:30 bash scripts/gpu_probes.sh
#   RESUME=1 ONLY="shipped lora_trained" MAX_TIME=00:00:11:00 VAL_EVERY=1000 NUM_WORKERS=4 bash scripts/gpu_probes.sh
#       continue probes from their last checkpoint in WORK (MAX_TIME counts the time already trained)
#   WHEELHOUSE=dir ...   air-gapped node with its own CUDA torch (as in scripts/gpu_check.sh)
# Writes to OUT (default runs/gpu_probes): results.jsonl, curves.json (every validation, all probes), one log per
# probe, TensorBoard events and sample scores (checkpoints stay in WORK, default /tmp/gpu_probes).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh  # $PY; WHEELHOUSE=dir for an air-gapped node
LM=${LM:-runs/full/stage0/hf}
MAX_TIME=${MAX_TIME:-00:00:05:00}
VAL_EVERY=${VAL_EVERY:-500}
ACCELERATOR=${ACCELERATOR:-gpu}
LIMIT=${LIMIT:-450}            # seconds per probe, evaluation included
NUM_WORKERS=${NUM_WORKERS:-2}
OUT=${OUT:-runs/gpu_probes}
WORK=${WORK:-/tmp/gpu_probes}
mkdir -p "$OUT" "$WORK"
[ -d "$LM" ] || { echo "LM directory not found: $LM (run make demo, or set LM=)"; exit 2; }

U=--model.init_args.unet.init_args
TE=--model.init_args.text_encoder.init_args
declare -A PROBES=(
  [shipped]=""
  [uniform]="--model.init_args.min_snr_gamma=null"
  [pooled]="$U.class_embed_type=projection $U.projection_class_embeddings_input_dim=256"
  [uniform_pooled]="--model.init_args.min_snr_gamma=null $U.class_embed_type=projection $U.projection_class_embeddings_input_dim=256"
  [lora_trained]="$TE.freeze=false --model.init_args.lora_lr=5.0e-4"   # LoRA from stage 1, at the UNet lr
)
NAMES=${ONLY:-${!PROBES[*]}}
for name in $NAMES; do
  [ -n "${PROBES[$name]+set}" ] || { echo "unknown probe $name (have: ${!PROBES[*]})"; exit 2; }
  resume=""
  [ -n "${RESUME:-}" ] && resume="--ckpt_path=$WORK/$name/stage1/run/checkpoints/last.ckpt"
  # shellcheck disable=SC2086
  timeout "$LIMIT" $PY scripts/stage_probe.py --name "$name" --lm "$LM" --accelerator "$ACCELERATOR" \
    --steps 100000 --max_time "$MAX_TIME" --val_every "$VAL_EVERY" --out "$WORK" \
    --n "${EVAL_N:-48}" --data.init_args.num_workers="$NUM_WORKERS" $resume ${PROBES[$name]} >"$OUT/$name.log" 2>&1 &
done
wait
# Bring back everything but checkpoints.
(cd "$WORK" && find . -name 'events.out.tfevents*' -o -name 'scores.jsonl' -o -name 'results.jsonl' -o -name 'config.yaml' \
  | tar -cf - -T -) | tar -xf - -C "$OUT"
cp "$WORK/results.jsonl" "$OUT/results.jsonl" 2>/dev/null || echo "no probe finished"
cat "$OUT/results.jsonl" 2>/dev/null
$PY scripts/probe_curves.py "$WORK" --json "$OUT/curves.json"
for name in $NAMES; do echo "== $name"; grep -E "max_time|Error|error" "$OUT/$name.log" | tail -3; done
