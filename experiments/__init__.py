"""The lecture's claims as experiments: each is one command that trains, measures and saves a plot.

    python -m experiments NAME            full run (each under 10 minutes on a 2-core CPU)
    python -m experiments NAME --quick    a few steps of the same code, for the tests
    python -m experiments --list          the names and what each shows

Each experiment is one file here, read top to bottom: the claim and its thresholds, the runs, the
verdict and the figure. It calls the scripts' own `train(cfg)` (or `main`) with a few flags
changed, reads their metrics.csv and draws one figure: docs/exp_NAME.png (--docs_dir) plus the
numbers behind it in out/experiments/NAME/results.json (--out_dir). docs/experiments.md shows
every figure with a caption saying what was measured and whether the lecture's claim held.
common.py holds what they share.
"""
from experiments import (abstain, dpo_nll, ei_vs_grpo, gae_lambda, kl_beta, length_bias,
                         length_growth, off_policy, r1_pipeline, reward_hacking, sampler_mismatch,
                         std_baseline)

# name -> (run(args) -> dict of results, one-line description), in the order of docs/experiments.md
EXPERIMENTS = {module.__name__.rsplit(".", 1)[-1]: (module.run, module.DESCRIPTION)
               for module in (gae_lambda, length_bias, std_baseline, kl_beta, off_policy,
                              sampler_mismatch, ei_vs_grpo, reward_hacking, dpo_nll, abstain,
                              length_growth, r1_pipeline)}
