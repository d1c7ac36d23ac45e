#!/usr/bin/env bash
# The GPU check: the figures docs/BENCHMARKS.md's GPU tables want, measured on one CUDA machine.
#
#   bash examples/gpu_check.sh [OUT]          (OUT: where logs and JSON lines go, default ./gpu-check)
#
# With or without real weights: set HUVI_SD15 and HUVI_MOTION_ADAPTER to SD1.5 and AnimateDiff
# folders in diffusers layout (`hf download stable-diffusion-v1-5/stable-diffusion-v1-5` and
# `hf download guoyww/animatediff-motion-adapter-v1-5-2`); without them full-size random weights are
# written first (`python -m huvi make-test-weights`, ~6 GB of disk). Speed and memory do not depend
# on the weights' values. The steps run most telling first, so a check cut short by a lease still
# returns the headline figures. Each is logged to OUT:
#   1. environment     nvidia-smi, torch, the libraries                            env.txt
#   2. bench           sd15-24gb, huvi and naive, then the Wan presets (huvi's step,
#                      random full-size transformer, no weights on disk needed)    bench.jsonl
#                      and 2 more steps of each under torch.profiler               profile/PRESET-STAGE[-naive].txt
#   3. train           sd15-24gb at its own size, 10 + 10 steps, a checkpoint every 5; SIGKILL once
#                      dpo-000005 is written, --resume to the end                  train.log, train-metrics.jsonl
#   4. generate        in the run's precision (auto: bf16 or fp16), with xformers (when installed)
#                      and with PyTorch SDPA, seconds each                         generate.jsonl
#   5. bench           the other SD1.5 GPU presets, huvi and naive                 bench.jsonl
#   6. load            each SD1.5 GPU preset's weights loaded, first step          load.jsonl
#   7. out of memory   the process capped at 6 GB of GPU memory: the one sentence, exit 2, a checkpoint
#                                                                                  oom.log
#   8. rows            Markdown rows for docs/BENCHMARKS.md                        rows.md (also printed)
# HUVI_GPU_CHECK_STEPS=N sets the bench's timed steps (default 10), HUVI_GPU_CHECK_WARMUP its
# warm-up steps (default 3). HUVI_GPU_CHECK_REHEARSAL=1 runs the same steps on a CPU at 4 frames of
# 64x64 (the bench on the tiny and wan-tiny presets, no out-of-memory step), to check the script
# itself where no GPU is lent; its figures mean nothing. On this workplace's device machine, carry
# diffusers, peft, imageio-ffmpeg and bitsandbytes as wheels in .whl: they are installed from there
# first (see /work/.library/device/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export HUVI_CACHE="$OUT/cache" HUVI_RUNS="$OUT/runs"
PY="${PYTHON:-python3}"
STEPS="${HUVI_GPU_CHECK_STEPS:-10}"
WARMUP="${HUVI_GPU_CHECK_WARMUP:-3}"
REHEARSAL="${HUVI_GPU_CHECK_REHEARSAL:-}"
PRESETS=(sd15-24gb sd15-16gb sd15-12gb)
WAN_PRESETS=(wan21-1.3b wan22-5b)
SIZE=()
if [ -n "$REHEARSAL" ]; then
    SIZE=(--set data.frames=4 --set data.stride=1 --set data.width=64 --set data.height=64 --set data.max_cached_frames=4 --set generate.steps=2 --set precision=bf16)
    STEPS=1 WARMUP=1
fi
if [ -z "$REHEARSAL" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
step() { echo "== $*" >&2; }
failed=0

step "1. environment"
{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"
  "$PY" -m pip list 2>/dev/null | grep -iE "^(diffusers|transformers|peft|accelerate|bitsandbytes|xformers|imageio) " ; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || [ -n "$REHEARSAL" ] || { echo "no CUDA GPU: this check is for a GPU machine (HUVI_GPU_CHECK_REHEARSAL=1 rehearses it on a CPU)" >&2; exit 2; }

bench() {  # bench PRESET [ARGS...]: one preset's lines appended to bench.jsonl
    local preset="$1"; shift
    "$PY" -m huvi bench --preset "$preset" --steps "$STEPS" --warmup "$WARMUP" --profile "$OUT/profile" "$@" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log" || failed=1
}

step "2. bench: sd15-24gb, huvi and naive; the Wan presets, huvi"
if [ -n "$REHEARSAL" ]; then bench tiny --naive; bench wan-tiny; else
    bench sd15-24gb --naive
    for preset in "${WAN_PRESETS[@]}"; do bench "$preset"; done
fi

if [ -n "${HUVI_SD15:-}" ] && [ -n "${HUVI_MOTION_ADAPTER:-}" ]; then
    SD15="$HUVI_SD15" MOTION="$HUVI_MOTION_ADAPTER"; echo "real weights: $SD15, $MOTION" >> "$OUT/env.txt"
else
    step "full-size random weights"
    "$PY" -m huvi make-test-weights "${HUVI_TEST_WEIGHTS:-/tmp/huvi-full-size-weights}" > "$OUT/weights.json" || exit 1
    SD15=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['base'])" "$OUT/weights.json")
    MOTION=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['motion_adapter'])" "$OUT/weights.json")
    echo "random full-size weights: $SD15, $MOTION" >> "$OUT/env.txt"
fi
WEIGHTS=(--set "model.base=$SD15" --set "model.motion_adapter=$MOTION" "${SIZE[@]}")

step "3. train sd15-24gb at its own size: checkpoint, SIGKILL, resume"
CATEGORY="$OUT/category" RUN="$OUT/runs/gpu-check"
rm -rf "$CATEGORY" "$RUN"
"$PY" -c "from huvi.synthetic import direction_category; direction_category('$CATEGORY', clips=8, frames=40, size=512)"
TRAIN=(train --category "$CATEGORY" --out "$RUN")
"$PY" -m huvi "${TRAIN[@]}" --preset sd15-24gb "${WEIGHTS[@]}" --set motion.steps=10 --set dpo.steps=10 \
    --set motion.checkpoint_every=5 --set dpo.checkpoint_every=5 > "$OUT/train.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -f "$RUN/checkpoints/dpo-000005/state.json" ]; do sleep 1; done
if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "SIGKILL after dpo-000005" >> "$OUT/train.log"; else echo "train ended before dpo-000005" >> "$OUT/train.log"; failed=1; fi
wait "$pid" 2>/dev/null
"$PY" -m huvi "${TRAIN[@]}" --resume >> "$OUT/train.log" 2>&1 || failed=1
cp "$RUN/metrics.jsonl" "$OUT/train-metrics.jsonl" 2>/dev/null

step "4. generate in the run's precision, with xformers and with SDPA"
"$PY" -c "import numpy as np; from PIL import Image; Image.fromarray(np.random.default_rng(0).integers(0, 256, (320, 512, 3), dtype=np.uint8)).save('$OUT/first.png')"
for backend in xformers sdpa; do
    copy="$OUT/runs/gpu-check-$backend"
    rm -rf "$copy" && cp -r "$RUN" "$copy"
    "$PY" -c "
from huvi.runs import Run
run = Run('$copy'); cfg = run.read_config(); cfg.model.attention_backend = '$backend'; run.write_config(cfg)"
    "$PY" - "$backend" "$copy" "$OUT" >> "$OUT/generate.jsonl" 2>> "$OUT/generate.log" <<'PYTHON' || failed=1
import json, subprocess, sys, time
backend, run, out = sys.argv[1:]
start = time.perf_counter()
proc = subprocess.run([sys.executable, "-m", "huvi", "generate", "--run", run, "--prompt", "a square sliding across the frame",
                       "--first-frame", f"{out}/first.png", "--out", f"{out}/sample-{backend}.mp4"], stdout=subprocess.DEVNULL, stderr=sys.stderr)
print(json.dumps({"backend": backend, "exit": proc.returncode, "seconds_with_loading": round(time.perf_counter() - start, 2)}))
sys.exit(proc.returncode)
PYTHON
done
grep -h "xformers is not installed" "$OUT/generate.log" | head -1

step "5. bench: the other SD1.5 GPU presets, huvi and naive"
[ -n "$REHEARSAL" ] || for preset in "${PRESETS[@]:1}"; do bench "$preset" --naive; done

step "6. load: each SD1.5 GPU preset's weights and its first step"
for preset in "${PRESETS[@]}"; do
    "$PY" -m huvi bench --load --preset "$preset" --stage dpo "${WEIGHTS[@]}" >> "$OUT/load.jsonl" 2>> "$OUT/load.log" || failed=1
done

step "7. out of memory, provoked"
if [ -z "$REHEARSAL" ]; then
"$PY" -c "
import sys, torch
torch.cuda.set_per_process_memory_fraction(6 * 2**30 / torch.cuda.get_device_properties(0).total_memory)
from huvi.cli import main
sys.exit(main(sys.argv[1:]))" train --category "$CATEGORY" --out "$OUT/runs/oom" --preset sd15-24gb "${WEIGHTS[@]}" --set model.gradient_checkpointing=false --steps 2 > "$OUT/oom.log" 2>&1
echo "exit $? (2 expected: one sentence naming a smaller preset)" >> "$OUT/oom.log"
tail -2 "$OUT/oom.log"
fi

step "8. rows for docs/BENCHMARKS.md"
"$PY" examples/bench_table.py "$OUT/bench.jsonl" "$OUT/load.jsonl" | tee "$OUT/rows.md"
"$PY" -c "
import json
rows = [json.loads(l) for l in open('$OUT/train-metrics.jsonl')]
for stage in ('motion', 'dpo'):
    s = sorted(r['seconds'] for r in rows if r['stage'] == stage)
    print(f'train sd15-24gb {stage}: {len(s)} steps, median {s[len(s) // 2]:.2f} s/step')
" | tee -a "$OUT/rows.md"
cat "$OUT/generate.jsonl" 2>/dev/null | tee -a "$OUT/rows.md"
exit $failed
