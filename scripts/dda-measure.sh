#!/usr/bin/env bash
# DDA as measured in docs/dda.md (issue 24): on Fashion-MNIST 14x14, the data-free spiking
# student and the same student on real data with the same schedule, 3 seeds; then the
# ablation at a tenth of the budget (a quarter did not fit the session), 2 seeds. Two runs at a time, one core each
# (OMP_NUM_THREADS=1), on a 2-core machine.
#   scripts/dda-measure.sh main|ablation|mixup|digits [OUT=results/dda-fmnist]
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: scripts/dda-measure.sh main|ablation|mixup|digits [OUT]}
OUT=${2:-results/dda-fmnist}
SF=.venv/bin/spikefed
export OMP_NUM_THREADS=1
DATA=(--dataset fashion-mnist --teacher-epochs 8 --set image-size=14 --set max-train-samples=5000
      --set max-test-samples=2000)
# the budget (sized for one core, about 25 minutes a seed) and the one ingredient measured to hurt
# with this teacher (trained without augmentation): crop/flip, off
MAIN=(--set dda-images=4096 --set dda-epochs=20 --set dda-student-steps=200 --set dda-denoiser-epochs=5
      --set dda-denoise-steps=20 --set dda-augment=none)
TENTH=(--set dda-images=1024 --set dda-epochs=3 --set dda-student-steps=200 --set dda-denoiser-epochs=5
       --set dda-denoise-steps=20 --set dda-augment=none)

run_seeds() {  # name, seeds..., then -- and the ablation's own arguments
  local name=$1; shift; local seeds=(); while [ "$1" != -- ]; do seeds+=("$1"); shift; done; shift
  local pids=() dirs=()
  for seed in "${seeds[@]}"; do
    "$SF" dda ablation --seeds "$seed" "${DATA[@]}" "$@" --out "$OUT/$name/seed$seed" > "$OUT/$name-seed$seed.log" 2>&1 &
    pids+=($!); dirs+=("$OUT/$name/seed$seed")
    if [ ${#pids[@]} -eq 2 ]; then wait "${pids[@]}"; pids=(); fi
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
  "$SF" dda merge "${dirs[@]}" --out "$OUT/$name"
}

mkdir -p "$OUT"
case $PART in
  main) run_seeds main 0 1 2 -- "${MAIN[@]}" --variant defaults --variant mode=real ;;
  ablation) run_seeds ablation 0 1 -- "${TENTH[@]}" --variant defaults --variant mode=synthetic \
      --variant mode=no-filter --variant dda-epoch-images=0 --variant dda-augment=crop-flip \
      --variant dda-adversarial-weight=0 --variant dda-rotation-weight=0 ;;
  mixup) run_seeds mixup 0 1 -- "${TENTH[@]}" --variant defaults --variant dda-mixup=1 --variant dda-mixup=0.4 ;;
  digits) "$SF" dda ablation --dataset digits --seeds 0,1,2 --variant defaults --variant mode=real \
      --set dda-images=2048 --set dda-epochs=10 --set dda-student-steps=100 --set dda-denoiser-epochs=5 \
      --set dda-denoise-steps=20 --set dda-augment=none --out "$OUT/digits" ;;
  *) echo "unknown part $PART; accepted: main, ablation, mixup, digits"; exit 2 ;;
esac
