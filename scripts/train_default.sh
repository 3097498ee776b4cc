#!/usr/bin/env bash
# scripts/train_default.sh — the main job (the first README command): set up, build, fetch the default corpus,
# train the small preset on the CPU, write results/ (JSON, curves PNG, checkpoints) and print a generated sample.
# Offline after setup: the corpus is fetched once into data/sotu and reused. Extra arguments go to gdn-train
# (for example --preset medium, or --steps 200 for a quick look). Reruns start over (--overwrite).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
"$root/scripts/setup.sh" build
"$root/scripts/fetch_corpus.sh"
cd "$root"
# Idle OpenMP threads sleep instead of spinning: on a busy laptop spinning threads steal the cores they wait for.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
./build/bin/gdn-train --preset small --data data/sotu --out results --overwrite "$@"
echo "train_default.sh: done in $(( $(date +%s) - start )) s; see results/training_results.json and results/training_curves.png"
