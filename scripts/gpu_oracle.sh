#!/usr/bin/env bash
# Stage-2 probes on one GPU, side by side on one card: the shipped stage-2 recipe (LoRA on the LM trained jointly)
# from a stage-1 checkpoint, each probe for MAX_TIME of training and scored every EVAL_EVERY steps (48 `test` scenes
# in the probe's words + chance, text use on 64 `val` scenes; EMA weights) by scripts/oracle_text_probe.py.
# Default probes: the ParaShapes paragraphs vs an oracle scene list in canonical words. Does object-exact leave
# chance given ~10x the CPU schedule's steps, and is the limit the reading (paragraphs behind the oracle) or the
# drawing (both at chance)?
#   LM=runs/full4/stage0/hf INIT=runs/full4/stage1/run/checkpoints/last.ckpt MAX_TIME=00:00:06:00 bash scripts/gpu_oracle.sh
#   PROBES=$'full_ft paragraph runs/lm/hf runs/init.ckpt --config experiments/tiny/lm_full_finetune.yaml\n...' ...
#       one probe per line: name, arm (paragraph|scene_list), LM directory, init checkpoint, extra CLI arguments
#   WHEELHOUSE=dir ...   air-gapped node with its own CUDA torch (as in scripts/gpu_check.sh); ACCELERATOR=cpu: a dry run
# Writes to RESULTS (default runs/gpu_oracle): <name>.curve.jsonl, <name>.result.jsonl; logs to LOGS (default RESULTS).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh  # $PY; WHEELHOUSE=dir for an air-gapped node
LM=${LM:-runs/full4/stage0/hf}
INIT=${INIT:-runs/full4/stage1/run/checkpoints/last.ckpt}
PROBES=${PROBES:-"paragraph paragraph $LM $INIT
scene_list scene_list $LM $INIT"}
MAX_TIME=${MAX_TIME:-00:00:06:00}
EVAL_EVERY=${EVAL_EVERY:-1000}
NUM_WORKERS=${NUM_WORKERS:-7}
LIMIT=${LIMIT:-500}            # seconds per probe, start-up and evaluations included
RESULTS=${RESULTS:-runs/gpu_oracle}
LOGS=${LOGS:-$RESULTS}
WORK=${WORK:-/tmp/gpu_oracle}
mkdir -p "$RESULTS" "$LOGS" "$WORK"
names=()
while read -r name arm lm init extra; do
  [ -n "$name" ] || continue
  for f in "$lm" "$init"; do [ -e "$f" ] || { echo "$name: not found: $f"; exit 2; }; done
  names+=("$name")
  # shellcheck disable=SC2086
  timeout "$LIMIT" $PY scripts/oracle_text_probe.py --arms "$arm" --train_lm --lm "$lm" --init_from "$init" \
    --accelerator "${ACCELERATOR:-gpu}" --steps 1000000 --max_time "$MAX_TIME" --eval_every "$EVAL_EVERY" --n "${EVAL_N:-48}" \
    --out "$WORK/$name" --data.init_args.num_workers="$NUM_WORKERS" $extra >"$LOGS/$name.log" 2>&1 &
done <<<"$PROBES"
wait
for name in "${names[@]}"; do
  cp "$WORK/$name/curve.jsonl" "$RESULTS/$name.curve.jsonl" 2>/dev/null || echo "$name: no evaluation row"
  cp "$WORK/$name/results.jsonl" "$RESULTS/$name.result.jsonl" 2>/dev/null || { echo "$name: did not finish"; tail -15 "$LOGS/$name.log"; }
  echo "== $name"; grep -E "Time limit|Error" "$LOGS/$name.log" | tail -3
  cat "$RESULTS/$name.curve.jsonl" "$RESULTS/$name.result.jsonl" 2>/dev/null | cut -c1-300
done
