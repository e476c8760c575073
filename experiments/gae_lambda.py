"""TD(0), Monte Carlo and GAE(lambda): bias against variance of the value target.

Claim (the lecture, Schulman et al. 2016): the one-step TD target r + gamma V(s') has low
variance but inherits the value estimate's bias; the Monte Carlo return is unbiased but noisy;
GAE's lambda moves between the two. The claim holds if TD(0) has the smaller variance and Monte
Carlo the smaller squared bias. gae.py measures both on a problem with known true values; this
experiment runs it and copies its figure.
"""
from __future__ import annotations

import os
import shutil

import gae

DESCRIPTION = "TD(0), Monte Carlo and GAE: bias and variance of the value target against lambda"


def run(args) -> dict:
    out = os.path.join(args.out_dir, "gae_lambda")
    table = gae.main(["--out_dir", out] + (["--episodes", "200"] if args.quick else []))
    # gae.py draws the figure itself: copy it to where every experiment's figure goes.
    folder = args.docs_dir or out
    path = os.path.join(folder, "exp_gae_lambda.png")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(out, "bias_variance.png"), path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    td0, monte_carlo = table[0], table[-1]  # the table runs from lambda 0 to lambda 1
    return {"table": table, "claim_holds": td0["variance"] < monte_carlo["variance"]
            and monte_carlo["bias2"] < td0["bias2"]}
