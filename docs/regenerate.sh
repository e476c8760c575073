#!/usr/bin/env bash
# Regenerates every figure under docs/: the curves of each script's default run, then every
# experiment. Run from anywhere: `bash docs/regenerate.sh` (about an hour on a 2-core AMD EPYC,
# two to three on a 2-core Intel Xeon), or `bash docs/regenerate.sh defaults` for the default
# runs' curves only. It replaces the runs in out/ (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."

python sft.py --overwrite && cp out/sft/curves.png docs/sft_curves.png
python grpo.py --overwrite && cp out/grpo/curves.png docs/grpo_curves.png
python dpo.py --overwrite && cp out/dpo/curves.png docs/dpo_curves.png
python ppo.py --overwrite && cp out/ppo/curves.png docs/ppo_curves.png
python expert_iteration.py --overwrite && cp out/expert_iteration/curves.png docs/expert_iteration_curves.png


if [ "${1:-all}" != "defaults" ]; then
    for name in $(python experiments.py --list | cut -d' ' -f1); do
        python experiments.py "$name"  # writes docs/exp_$name.png
    done
fi
