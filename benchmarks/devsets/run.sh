#!/usr/bin/env bash
# MTL against its baselines on every development set: 3 training seeds, 5-way 1- and 5-shot, rows
# pretrained + inner loop, SimpleShot L2N/CL2N, FT and SS (MTL) with the default `cpu` recipe, the
# same 600 test episodes per setting for every row and seed. Then the combined table.
#   bash benchmarks/devsets/run.sh [OUT]        (default OUT: benchmarks/devsets/results)
# Builds the folder sets first (benchmarks/devsets/build.py). Finished seeds are read back.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-benchmarks/devsets/results}
DEVSETS=${DEVSETS:-$HOME/.cache/mtl_keras/devsets}
PY=${PYTHON:-.venv/bin/python}
MTL=(${MTL_KERAS:-.venv/bin/mtl-keras})
SETS=${SETS:-"glyph_scenes clipart crawl_tiles cards"}
$PY benchmarks/devsets/build.py --out "$DEVSETS" --sets clipart crawl_tiles cards
COMMON=(--shots 1 5 --rows ft ss --seeds 0 1 2 --set hard_ways=0 --set ft_probe_steps=0 --set ft_lrs=1e-4)
for name in $SETS; do
  if [ "$name" = glyph_scenes ]; then
    # The demo's pretraining (4 epochs) and queries; the cpu recipe's meta-training.
    "${MTL[@]}" reproduce --config cpu-glyph_scenes --quiet --out "$OUT/$name" "${COMMON[@]}"
  else
    "${MTL[@]}" reproduce --config cpu --benchmark folders --root "$DEVSETS/$name" --quiet \
      --out "$OUT/$name" "${COMMON[@]}" --set queries=5 --set test_queries=5 --set drop_small_classes=true
  fi
done
$PY benchmarks/devsets/table.py --out "$OUT" --sets $SETS
