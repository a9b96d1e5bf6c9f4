#!/usr/bin/env bash
# ESVAE, FSVAE and two ANN VAEs on Fashion-MNIST at 32x32 (docs/esvae.md), one after the other
# on one CPU thread each, then the report. Usage: scripts/esvae-fmnist.sh [OUT] [EPOCHS]
set -euo pipefail
out=${1:-results/esvae_fmnist}
epochs=${2:-5}
spikefed=${SPIKEFED:-.venv/bin/spikefed}
data=(--dataset fashion-mnist --epochs "$epochs" --seed 0
      --set image-size=32 --set max-train-samples=6000 --set max-test-samples=2000)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# the authors' settings: T = 16; ESVAE latent 32, lr 0.003; FSVAE latent 128, lr 0.001; ANN VAE latent 128, lr 0.001
"$spikefed" esvae train "${data[@]}" --model esvae --timesteps 16 --latent-dim 32 --lr 0.003 --out "$out/esvae"
"$spikefed" esvae train "${data[@]}" --model fsvae --timesteps 16 --latent-dim 128 --lr 0.001 --out "$out/fsvae"
"$spikefed" esvae train "${data[@]}" --model ann --latent-dim 128 --lr 0.001 --out "$out/ann-authors"
"$spikefed" esvae train "${data[@]}" --model ann --latent-dim 32 --lr 0.003 --out "$out/ann-same-shape"
"$spikefed" esvae report "$out/esvae" "$out/fsvae" "$out/ann-authors" "$out/ann-same-shape" --out "$out"
