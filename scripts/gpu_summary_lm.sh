#!/usr/bin/env bash
# Can a stage-0 LM trained far longer learn to *summarise* its paragraphs, and does one that can make them readable
# for the UNet? On one GPU, side by side:
#   1. stage-0 LMs of several sizes on the summary corpus (every stage-2/3 paragraph followed by " In short: " and
#      its oracle scene list; `scripts/lm_summary_probe.py corpus`), whole documents per block
#      (`--data.init_args.packing=document`), for LM_TIME each, with the full run's tokenizer;
#   2. their greedy summaries scored on `stage2` / `val` / `test` paragraphs (`lm_summary_probe.py eval`);
#   3. the stage-2 paragraph probe (`scripts/gpu_oracle.sh`) from the same stage-1 UNet with the first LM (same shape
#      as the shipped one) against the shipped LM, for PROBE_TIME each.
#   CORPUS=runs/s8/sum_corpus.txt.gz LM=runs/full4/stage0/hf INIT=runs/gpu_init/stage1_ema.ckpt WHEELHOUSE=.whl \
#       bash scripts/gpu_summary_lm.sh
#   ACCELERATOR=cpu LM_TIME=00:00:00:20 PROBE_TIME=00:00:00:30 ... : a dry run on a CPU
# MODELS: one LM per line: name, hidden size, layers, MLP size, peak lr, max steps (the cosine schedule's length;
# LM_TIME stops it sooner). Output (OUT, default runs/gpu_summary): summary.jsonl, probes/, logs, the HF directories
# of LMs up to 30 MB.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh  # $PY; WHEELHOUSE=dir for an air-gapped node
CORPUS=${CORPUS:-runs/s8/sum_corpus.txt.gz}
LM=${LM:-runs/full4/stage0/hf}
INIT=${INIT:-runs/gpu_init/stage1_ema.ckpt}
ACCELERATOR=${ACCELERATOR:-gpu}
LM_TIME=${LM_TIME:-00:00:03:00}
PROBE_TIME=${PROBE_TIME:-00:00:02:20}
SUMMARY_N=${SUMMARY_N:-60}
OUT=${OUT:-runs/gpu_summary}
WORK=${WORK:-/tmp/gpu_summary}
MODELS=${MODELS:-"s128 128 2 352 2e-3 6000
s256 256 4 704 2e-3 4000
s512 512 8 1376 1e-3 2500"}
mkdir -p "$OUT" "$WORK/tok"
for f in "$CORPUS" "$LM/tokenizer.json" "$INIT"; do [ -e "$f" ] || { echo "not found: $f"; exit 2; }; done
if [[ "$CORPUS" == *.gz ]]; then gunzip -c "$CORPUS" >"$WORK/corpus.txt"; CORPUS=$WORK/corpus.txt; fi
cp "$LM"/tokenizer.json "$LM"/tokenizer_config.json "$WORK/tok/"  # the full run's tokenizer: the LM fits its UNet
if [ "$ACCELERATOR" = gpu ]; then PREC=bf16-mixed; DEV=cuda; else PREC=32-true; DEV=cpu; fi

echo "== 1. stage-0 LMs on the summary corpus ($(wc -l <"$WORK/corpus.txt" 2>/dev/null || wc -l <"$CORPUS") documents)"
names=()
while read -r name h layers mlp lr steps; do
  [ -n "$name" ] || continue
  names+=("$name")
  $PY -m paradiffusion.cli fit --config experiments/tiny/stage0_lm.yaml --trainer.accelerator="$ACCELERATOR" \
    --trainer.precision="$PREC" --trainer.max_steps="$steps" --trainer.max_time="$LM_TIME" \
    --trainer.val_check_interval=500 --trainer.log_every_n_steps=50 --trainer.enable_progress_bar=false \
    --trainer.default_root_dir="$WORK/$name" --trainer.logger.init_args.save_dir="$WORK/$name" \
    "--data.init_args.splits=[]" "--data.init_args.text_files=[$CORPUS]" --data.init_args.tokenizer_dir="$WORK/tok" \
    --data.init_args.packing=document --data.init_args.batch_size=32 \
    --model.init_args.hidden_size="$h" --model.init_args.num_hidden_layers="$layers" \
    --model.init_args.intermediate_size="$mlp" --model.init_args.lr="$lr" \
    --model.init_args.export_dir="$WORK/$name/hf" >"$OUT/lm_$name.log" 2>&1 &
done <<<"$MODELS"
wait
for name in "${names[@]}"; do
  echo "-- $name"; grep -E "parameters|Time limit|max_steps|Error" "$OUT/lm_$name.log" | tail -3
  (cd "$WORK/$name" && find . -name 'events.out.tfevents*' | tar -cf - -T -) | tar -xf - -C "$OUT" --one-top-level="tb_$name"
done

echo "== 2. greedy summaries"
for name in "${names[@]}"; do
  [ -f "$WORK/$name/hf/model.safetensors" ] || { echo "$name: no export"; continue; }
  for split in stage2 val test; do
    $PY scripts/lm_summary_probe.py eval "$WORK/$name/hf" --split "$split" --n "$SUMMARY_N" --device "$DEV" \
      >"$WORK/$name.$split.json" 2>"$OUT/eval_$name.$split.log" &
  done
done
wait
cat "$WORK"/*.json >"$OUT/summary.jsonl" 2>/dev/null
cut -c1-400 "$OUT/summary.jsonl"
for name in "${names[@]}"; do  # bring back the small LMs (for CPU probes)
  [ "$(du -sm "$WORK/$name/hf" 2>/dev/null | cut -f1)" -le 30 ] 2>/dev/null && cp -r "$WORK/$name/hf" "$OUT/$name"
done

echo "== 3. stage-2 paragraph probe: ${names[0]} vs the shipped LM"
first="$WORK/${names[0]}/hf"
$PY scripts/init_checkpoint.py "$INIT" "$WORK/init_${names[0]}.ckpt" --lm "$first" || exit 1
PROBES="${names[0]} paragraph $first $WORK/init_${names[0]}.ckpt
shipped paragraph $LM $INIT" ACCELERATOR=$ACCELERATOR MAX_TIME=$PROBE_TIME EVAL_EVERY=${EVAL_EVERY:-700} \
  NUM_WORKERS=${NUM_WORKERS:-5} RESULTS="$OUT/probes" WORK="$WORK/probes" bash scripts/gpu_oracle.sh
