#!/usr/bin/env bash
# Reruns every default run and every experiment on this machine, and rewrites what the docs quote:
# the JSON under docs/results/ that every number in the README and docs/ comes from, the default
# runs' metrics.csv, and the figures under docs/. Then `python docs/render.py` rewrites the
# generated blocks from that JSON, and docs/figures.py draws the default runs' figures.
#   bash docs/regenerate.sh            everything (a few hours on a 2-core CPU)
#   bash docs/regenerate.sh defaults   the default runs (three seeds each) and bench.py only
#   bash docs/regenerate.sh trl        the Hugging Face bridge: ours against TRL's, 1 and 2 processes
#   bash docs/regenerate.sh gpu        the default runs with --device cuda, into docs/results/gpu
#   bash docs/regenerate.sh NAME...    these experiments only
# Run it on committed code (each result records the commit) with nothing else on the machine:
# the wall times are part of the results.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain -- '*.py')" ]; then
    echo "regenerate.sh: commit the code first (each result records the commit it ran)" >&2
    exit 2
fi
COMMIT=$(git rev-parse --short HEAD)
export OMP_NUM_THREADS=2  # the threads every quoted number was measured with
mkdir -p docs/results/defaults docs/results/experiments docs/results/trl

# save SOURCE_JSON DEST_JSON COMMAND: wrap a run's JSON with the command, commit and machine
save() {
    python - "$@" "$COMMIT" <<'PY'
import json, sys
from runs import machine_description, write_json
source, dest, command, commit = sys.argv[1:5]
with open(source) as f:
    body = json.load(f)
key = "results" if "/experiments/" in dest else "summary"
write_json(dest, {"command": command, "commit": commit, "machine": machine_description(),
                  key: body})
PY
}

# default_run NAME SCRIPT [FLAGS...]: python SCRIPT.py FLAGS into out/NAME; its summary and its
# metrics.csv into docs/results/defaults/
default_run() {
    local name=$1 script=$2; shift 2
    python "$script.py" --overwrite --out_dir "out/$name" "$@"
    local shown="python $script.py"; [ $# -gt 0 ] && shown="$shown $*"
    save "out/$name/summary.json" "docs/results/defaults/$name.json" "$shown"
    cp "out/$name/metrics.csv" "docs/results/defaults/$name.metrics.csv"
}

if [ $# -eq 0 ] || [ "$1" = defaults ]; then
    # Seed 0 is the README's run; seeds 1 and 2 show the spread. The RL scripts start from the
    # seed-0 SFT model (out/sft/model.pt): their seeds move the RL run only.
    for seed in 0 1 2; do
        suffix=$([ $seed = 0 ] && echo "" || echo "_seed$seed")
        seed_flag=$([ $seed = 0 ] && echo "" || echo "--seed $seed")
        default_run "sft$suffix" sft $seed_flag
        for script in grpo expert_iteration dpo ppo distill; do  # distill: grpo's model teaches
            default_run "$script$suffix" "$script" $seed_flag
        done
    done
    default_run ppo_reward_model ppo --reward model
    default_run grpo_cs336 grpo --preset cs336
    default_run expert_iteration_cs336 expert_iteration --preset cs336
    python bench.py --out out/bench/bench.json
    save out/bench/bench.json docs/results/defaults/bench.json "python bench.py"
    python docs/figures.py  # docs/NAME_curves.png: the three seeds' mean and range
fi
if [ "${1:-}" = trl ]; then
    run_trl() {  # run_trl NAME COMMAND...: a bridge run into out/trl/NAME, its summary saved
        local name=$1; shift
        "$@" --overwrite --out_dir "out/trl/$name"
        save "out/trl/$name/summary.json" "docs/results/trl/$name.json" "$*"
    }
    run_trl grpo python grpo.py
    run_trl trl_grpo python trl_grpo.py
    run_trl dpo python dpo.py
    run_trl trl_dpo python trl_dpo.py
    for seed in 0 1 2; do
        run_trl "trl_grpo_steps40_1proc_seed$seed" \
            python trl_grpo.py --steps 40 --eval_every 10 --seed $seed
        OMP_NUM_THREADS=1 run_trl "trl_grpo_steps40_2proc_seed$seed" \
            torchrun --standalone --nproc_per_node 2 trl_grpo.py --steps 40 --eval_every 10 \
            --seed $seed
    done
fi
if [ "${1:-}" = gpu ]; then
    mkdir -p docs/results/gpu
    for name in sft grpo expert_iteration dpo ppo grpo_cs336 expert_iteration_cs336; do
        script=${name%_cs336}; flags=(--device cuda)
        [ "$name" != "$script" ] && flags+=(--preset cs336)
        python "$script.py" --overwrite --out_dir "out/gpu/$name" "${flags[@]}" \
            $([ "$script" != sft ] && echo --sft_checkpoint out/gpu/sft/model.pt)
        save "out/gpu/$name/summary.json" "docs/results/gpu/$name.json" \
            "python $script.py ${flags[*]}"
    done
    python docs/render.py
    exit 0
fi
if [ $# -eq 0 ] || { [ "$1" != defaults ] && [ "$1" != trl ]; }; then
    names=("$@"); [ $# -eq 0 ] && names=($(python -m experiments --list | cut -d' ' -f1))
    for name in "${names[@]}"; do
        python -m experiments "$name" --docs_dir docs  # docs/exp_NAME.png
        save "out/experiments/$name/results.json" "docs/results/experiments/$name.json" \
            "python -m experiments $name"
    done
fi
python docs/render.py
