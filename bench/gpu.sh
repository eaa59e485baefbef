#!/usr/bin/env bash
# The GPU path, checked and measured in one go on a CUDA machine (docs/training.md records what
# it gave on an H200). Run from the repository root with smalto importable (PYTHONPATH=. or
# installed); results go to $OUT (default: gpu-results/).
#
#   bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
py=${PYTHON:-python3}
part() { echo; echo "=== $1 ($(date +%T))"; }

part environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

part "smalto train on CUDA (micro, Muon, compiled, probe every 10 steps), then smalto eval"
timeout 150 $py -m smalto train --preset shapes-micro --steps 20 --eval-every 10 --optimizer muon --compile \
    --out /tmp/gpu-micro && timeout 60 $py -m smalto eval --quick --model /tmp/gpu-micro | tail -4

part "v1's recipe on one GPU: shapes-tiny, 3000 steps, compiled; minutes to v1's ShapesEval"
start=$(date +%s)
timeout 330 $py -m smalto train --steps 3000 --compile --eval-every 1000 --save-every 3000 --out /tmp/gpu-tiny \
    2> >(tr '\r' '\n' | grep -v '^train:' >&2) && echo "trained in $(( $(date +%s) - start )) s"
timeout 120 $py -m smalto eval --model /tmp/gpu-tiny --json "$OUT/tiny-eval.json" | tail -12
cp /tmp/gpu-tiny/log.jsonl "$OUT/tiny-log.jsonl" 2>/dev/null

part "throughput and memory of the GPU presets (bf16 autocast, AdamW unless named)"
timeout 120 $py bench/train_speed.py --preset base --batch 16 --seq 2048 --steps 8 --json "$OUT/base.json"
timeout 45 $py bench/train_speed.py --preset base --batch 16 --seq 2048 --steps 8 --optimizer muon --only eager
timeout 90 $py bench/train_speed.py --preset large --batch 8 --seq 2048 --steps 6 --only eager --json "$OUT/large.json"

part "two processes on one GPU (NCCL refuses two ranks on one device; recorded, not required)"
timeout 45 torchrun --standalone --nproc_per_node 2 -m smalto train --preset shapes-micro --steps 5 \
    --out /tmp/gpu-dist 2>&1 | grep -iE "error|checkpoint" | head -5
echo "done $(date +%T)"
