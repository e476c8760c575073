"""The lecture's claims as experiments: each is one command that trains, measures and saves a plot.

    python -m experiments NAME            full run (each meant to stay within minutes on 2 cores)
    python -m experiments NAME --quick    a few steps of the same code, for the tests
    python -m experiments --list          the names and what each shows

Each experiment is one file here, read top to bottom: the claim and its thresholds, the runs, the
verdict and the figure. It calls the scripts' own `train(cfg)` (or `main`) with a few flags
changed, each named in its own file, reads their metrics.csv and writes, under
out/experiments/NAME/ (--out_dir), its figure exp_NAME.png and the numbers behind it in
results.json. Only docs/regenerate.sh writes into docs/ (--docs_dir docs). docs/experiments.md
shows every figure with a caption saying what was measured and whether the lecture's claim held.
common.py holds what they share.
"""
from experiments import (abstain, distill, dpo_nll, dpo_online, ei_vs_grpo, gae_lambda, kl_beta,
                         length_bias, length_growth, off_policy, r1_pipeline, reward_hacking,
                         rlhf_length, sampler_mismatch, sft_data, std_baseline)

# name -> (run(args) -> dict of results, one-line description), in the order of docs/experiments.md
EXPERIMENTS = {module.__name__.rsplit(".", 1)[-1]: (module.run, module.DESCRIPTION)
               for module in (sft_data, gae_lambda, length_bias, std_baseline, kl_beta, off_policy,
                              sampler_mismatch, ei_vs_grpo, reward_hacking, rlhf_length, dpo_nll,
                              dpo_online, abstain, length_growth, r1_pipeline, distill)}
