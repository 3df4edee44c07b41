#!/bin/bash
# Which LoRA depth fits an hour on this machine? Seconds per stage-2 training step at tiny scale (batch 16, 32 px):
# frozen cached SmolLM2 states vs LoRA in the top N of the 4 blocks (the N blocks below are cached and frozen),
# measured side by side in one run. Each arm is fitted for 3 and for 13 steps (64 paragraphs, no validation, its
# text cache warmed first); s/step = (t13 - t3) / 10, so start-up and caching cancel out.
#   bash scripts/bench_lora_top.sh            # ~5 min on 2 cores; prints s/step, the ratio to frozen, steps per hour
#   PY=python OUT=/tmp/bench bash scripts/bench_lora_top.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench_lora_top}
export HF_HUB_OFFLINE=1
rm -rf "$OUT"; mkdir -p "$OUT"
common=(--config experiments/base.yaml --config experiments/model/tiny.yaml --config experiments/tiny/stage2.yaml
        --data.init_args.n_train=64 --trainer.val_check_interval=1000 --trainer.limit_val_batches=0
        --trainer.num_sanity_val_steps=0 --model.init_args.init_from=null --trainer.enable_progress_bar=false
        --data.init_args.text_cache="$OUT/cache")
for arm in frozen 1 2 4; do
  extra=()
  if [ "$arm" != frozen ]; then
    extra=(--config experiments/tiny/lora_top.yaml --model.init_args.text_encoder.init_args.trainable_blocks="$arm")
  fi
  "$PY" -m paradiffusion.cli fit "${common[@]}" "${extra[@]}" --trainer.max_steps=1 \
      --trainer.logger.init_args.save_dir="$OUT/warm-$arm" > "$OUT/warm-$arm.log" 2>&1
  for steps in 3 13; do
    t0=$("$PY" -c 'import time; print(time.time())')
    "$PY" -m paradiffusion.cli fit "${common[@]}" "${extra[@]}" --trainer.max_steps=$steps \
        --trainer.logger.init_args.save_dir="$OUT/$arm-$steps" > "$OUT/$arm-$steps.log" 2>&1
    t1=$("$PY" -c 'import time; print(time.time())')
    echo "$arm $steps $t0 $t1" >> "$OUT/times.txt"
  done
done
"$PY" - "$OUT/times.txt" <<'PY'
import sys
t = {}
for line in open(sys.argv[1]):
    arm, steps, t0, t1 = line.split()
    t.setdefault(arm, {})[int(steps)] = float(t1) - float(t0)
frozen = (t["frozen"][13] - t["frozen"][3]) / 10
print("arm (LoRA blocks)   s/step   x frozen   steps in 60 min")
for arm, v in t.items():
    per = (v[13] - v[3]) / 10
    print(f"{arm:>17}   {per:6.2f}   {per / frozen:8.1f}   {int(3600 / per):>15}")
PY
