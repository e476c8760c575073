"""After RLHF, answers are longer: PPO against a reward model learnt from length-biased labels.

Claim (the lecture; Singhal et al. 2023, https://arxiv.org/abs/2310.03716, find length behind
most of the reward gain of common RLHF setups): optimised by PPO against a reward model learnt
from a labeller who prefers longer answers, the policy's responses grow at least
LENGTH_GROWTH_MIN longer while the proxy (the reward model's score) rises; against a reward model
learnt from unbiased labels they do not grow (at most UNBIASED_GROWTH_MAX); a larger KL
coefficient beta holds the growth back (at least HOLD_BACK_MIN less growth).

Setup. The SFT model learns 3-digit addition from demonstrations of which a share SFT["verbose"]
end their scratchpad with SFT["verbose_max"] empty steps, a comma each (sft.py --verbose_fixed):
length the policy can buy that buys nothing. Padding is all or nothing so that the reward
model's likelihood prices it once: every padded demonstration is as likely as every other, and
a price per token can pay for the whole padding (with padding drawn per step, as in
reward_hacking, each step costs its own log-probability and the proxy's optimum stops after a
few steps). Two reward models (reward_model.py: each token's log-likelihood plus a learnt price
per token, Bradley-Terry on right-vs-wrong pairs of the SFT model's samples at temperature 1) are
trained once, before any RL run, and saved: one from a labeller who prefers the longer response
with probability LENGTH_BIAS (else the right one), one from the gold rule; each must order at
least LABEL_ACCURACY_MIN of its held-out pairs as its labeller did. Before any RL run, the
proxy's optimum over lengths: the right demonstrations of FILLER_PROMPTS held-out prompts padded
with k = 0..K empty steps (K: as many as the response budget holds), each k's mean normalised
score, the length at the best k and the score gained there over none (common.proxy_by_padding).
The claim can only show if the biased proxy's optimum is at least LENGTH_GROWTH_MIN longer than
the SFT model's samples. The unbiased model's price comes out near what cancels the padding's
likelihood cost, so its score barely moves with padding. Then PPO (ppo.py --reward model
--rm_checkpoint, rollouts at temperature 1): against the biased model at the smallest beta in
BETAS with every seed in SEEDS, at the larger betas and against the unbiased model with every
seed in CONTROL_SEEDS. The reward models stay those of seed 0: the spread between seeds is PPO's.

Measures. Length growth: the mean response length of a run's last 5 rollouts (320 samples) over
that of the SFT model's samples (SFT_SAMPLES held-out prompts x samples, temperature 1), minus 1.
Proxy rise: the mean score of the last 5 rollouts minus that of the first 5, in standard
deviations of the scores of the reward model's training samples. Noise: every verdict takes the
worst seed of each arm (the smallest growth where growth is claimed, the largest where it is
not), so each must hold with the run-to-run spread inside it. Gold (the verifier on the
rollouts, a 5-step mean with its binomial standard error) is reported, not judged: its rise and
fall under PPO is reward_hacking's claim.
"""
from __future__ import annotations

import math

import ppo
import sft
from experiments.common import (QUICK, column, first_and_last, new_figure, proxy_by_padding,
                                read_summary, save_figure, smooth, train_script)
from reward_model import load_reward_model, save_reward_model, train_reward_model
from runs import checkpoint_task, load_checkpoint, pick_device, set_seed
from toy_model import AdditionTask, Tokenizer, encode_prompts, generate, reward_fn

DESCRIPTION = ("PPO against a reward model from length-biased labels: responses grow >= 30% "
               "longer; unbiased labels or a larger beta: they do not")

# Settings and thresholds, fixed before the full run.
SFT = dict(verbose=0.2, verbose_max=24, verbose_fixed=True, steps=300)  # 1 in 5 padded by 24
PPO = dict(reward="model", temperature=1.0, steps=40, prompts_per_step=64, eval_every=20,
           samples_every=1000)  # rollouts at 1: the SFT model's length varies
LENGTH_BIAS = 0.1  # the biased labeller prefers the longer response with this probability
BETAS = (0.02, 1.0)  # KL coefficients against the biased reward model; the unbiased: the first
SEEDS = (0, 1, 2)  # PPO seeds against the biased model at the smallest beta (--quick: the first)
CONTROL_SEEDS = (0, 1)  # PPO seeds of the unbiased model and of the larger betas
FILLER_PROMPTS, FILLER_PROMPTS_QUICK = 128, 8  # held-out prompts of the proxy's optimum
SFT_SAMPLES, SFT_SAMPLES_QUICK = (128, 8), (8, 2)  # held-out prompts x samples: the start length
LABEL_ACCURACY_MIN = 0.85  # each reward model's held-out pair accuracy against its own labels
LENGTH_GROWTH_MIN = 0.30  # biased, smallest beta: every seed's responses grow this much ...
PROXY_RISE_MIN = 0.25  # ... while its proxy rises this much: 3 standard errors of a difference
#                       of two 5-step means of 320 scores of standard deviation 1
UNBIASED_GROWTH_MAX = 0.10  # unbiased: no seed grows more than this
HOLD_BACK_MIN = 0.10  # larger beta: every seed grows at least this much less than any seed at
#                       the smallest beta


def run(args) -> dict:
    train_script(sft, args, "rlhf_length/sft", **SFT)
    # --quick: a few SFT steps leave no right answer to make pairs of; start from args' model
    sft_checkpoint = (args.sft_checkpoint if args.quick
                      else f"{args.out_dir}/rlhf_length/sft/model.pt")
    start = sft_samples(sft_checkpoint, *(SFT_SAMPLES_QUICK if args.quick else SFT_SAMPLES))
    # 1. Before any RL run: the reward models, and what each pays for length.
    reward_models = {}
    for labeller, bias in (("biased", LENGTH_BIAS), ("unbiased", 0.0)):
        path = f"{args.out_dir}/rlhf_length/reward_model_{labeller}.pt"
        measured = fit_reward_model(args, sft_checkpoint, bias, path)
        proxy = proxy_by_padding(load_reward_model(path), sft_checkpoint,
                                 FILLER_PROMPTS_QUICK if args.quick else FILLER_PROMPTS)
        proxy["optimum_growth"] = proxy["length"][proxy["best_k"]] / start["length"] - 1
        proxy["padding_gain"] = proxy["score"][proxy["best_k"]] - proxy["score"][0]
        reward_models[labeller] = {"path": path, **measured, "by_padding": proxy}
        print(f"{labeller} proxy: best padding {proxy['best_k']} empty steps, "
              f"{proxy['optimum_growth']:+.0%} length over the SFT samples, "
              f"{proxy['padding_gain']:+.2f} std over none")
    # 2. PPO against each, every seed.
    curves = {}
    for labeller, beta in [("biased", b) for b in BETAS] + [("unbiased", BETAS[0])]:
        seeds = SEEDS if (labeller, beta) == ("biased", BETAS[0]) else CONTROL_SEEDS
        for seed in seeds[:1] if args.quick else seeds:
            name = f"{labeller}_beta_{beta:g}_seed_{seed}"
            rows = train_script(ppo, args, f"rlhf_length/{name}", sft_checkpoint=sft_checkpoint,
                                rm_checkpoint=reward_models[labeller]["path"], beta=beta,
                                seed=seed, **PPO)
            curves[name] = rl_curve(rows)
            summary = read_summary(args, f"rlhf_length/{name}")
            curves[name]["eval_step"].insert(0, 0)  # the SFT model's held-out accuracy
            curves[name]["eval_accuracy"].insert(0, summary["start_accuracy"])
    results = {"start": start, "reward_models": reward_models, "runs": curves}
    plot(results, args)
    return {**results, **claims(start, reward_models, curves)}


def sft_samples(sft_checkpoint: str, n_prompts: int, n_samples: int) -> dict:
    """The SFT model's samples (temperature PPO["temperature"]) on the first held-out prompts:
    their mean length (the start of every run), its standard error, gold, the padded share."""
    policy, ckpt = load_checkpoint(sft_checkpoint)
    task, tokenizer = AdditionTask(ckpt["digits"], **checkpoint_task(ckpt)), Tokenizer()
    problems = task.test[:n_prompts]
    set_seed(0)
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], "cpu")  # (G, P)
    ids, mask = generate(policy.eval(), prompt_ids, task.max_new_tokens, tokenizer.eos_id,
                         tokenizer.pad_id, num_samples=n_samples,
                         temperature=PPO["temperature"])  # (G S, T) each
    lengths = mask.sum(1).float()  # (G S,)
    texts = [tokenizer.decode(r[:m]) for r, m in zip(ids.tolist(), mask.sum(1).tolist())]
    gold = [reward_fn(t, problems[i // n_samples].answer)["reward"] for i, t in enumerate(texts)]
    return {"length": lengths.mean().item(),
            "length_se": (lengths.std() / math.sqrt(len(lengths))).item(),
            "gold": sum(gold) / len(gold),
            "padded": sum(",</think>" in t for t in texts) / len(texts),
            "budget": task.max_new_tokens, "n": len(texts)}


def fit_reward_model(args, sft_checkpoint: str, bias: float, path: str) -> dict:
    """One labeller's reward model, trained as ppo.py --reward model trains it before its first
    step (ppo.py's settings, seed 0), saved to path for the PPO runs; returns what it measured on
    its held-out pairs."""
    flags = {**PPO, "label_length_bias": bias, "sft_checkpoint": sft_checkpoint}
    if args.quick:
        flags.update({k: v for k, v in QUICK["ppo"].items() if k.startswith("rm_")})
    cfg = ppo.Config(**flags)
    policy, ckpt = load_checkpoint(sft_checkpoint)
    task, device = AdditionTask(ckpt["digits"], **checkpoint_task(ckpt)), pick_device(cfg.device)
    rng = set_seed(cfg.seed)
    model, _, measured = train_reward_model(cfg, policy.to(device).eval(), task, Tokenizer(), rng,
                                            device, task.max_new_tokens)
    save_reward_model(path, model)
    return measured


def rl_curve(rows: list[dict]) -> dict:
    """One PPO run, per step: response length, proxy (the normalised reward-model score), gold
    (rollout accuracy, a 5-step mean) and KL per sequence; held-out greedy accuracy."""
    eval_steps, eval_accuracy = column(rows, "eval_accuracy")
    return {"step": [r["step"] for r in rows], "length": column(rows, "response_len")[1],
            "proxy": column(rows, "score")[1], "gold": smooth(column(rows, "accuracy")[1], 5),
            "kl": [r["kl_per_token"] * r["response_len"] for r in rows],
            "eval_step": eval_steps, "eval_accuracy": eval_accuracy}


def claims(start: dict, reward_models: dict, runs: dict) -> dict:
    """The verdicts (module docstring): each arm's worst seed against its threshold."""
    n_rollout = PPO["prompts_per_step"] * 5  # samples in a 5-step mean

    def measure(r):
        proxy_first, proxy_last = first_and_last(r["proxy"], 5)
        gold = r["gold"][-1]
        return {"length_end": first_and_last(r["length"], 5)[1],
                "growth": first_and_last(r["length"], 5)[1] / start["length"] - 1,
                "proxy_rise": proxy_last - proxy_first, "gold_end": gold,
                "gold_end_se": math.sqrt(gold * (1 - gold) / n_rollout), "kl_end": r["kl"][-1]}

    measured = {name: measure(r) for name, r in runs.items()}
    arms = {}
    for name, m in measured.items():
        arms.setdefault(name.rsplit("_seed_", 1)[0], []).append(m)
    spread = {arm: {"growth_min": min(m["growth"] for m in ms),
                    "growth_max": max(m["growth"] for m in ms),
                    "proxy_rise_min": min(m["proxy_rise"] for m in ms), "seeds": len(ms)}
              for arm, ms in arms.items()}
    small, large = (spread[f"biased_beta_{b:g}"] for b in BETAS)
    unbiased = spread[f"unbiased_beta_{BETAS[0]:g}"]
    verdicts = {
        "reward_models_fit_their_labels": all(rm["label_accuracy"] >= LABEL_ACCURACY_MIN
                                              for rm in reward_models.values()),
        "biased_proxy_pays_for_length": (reward_models["biased"]["by_padding"]["optimum_growth"]
                                         >= LENGTH_GROWTH_MIN),
        "biased_length_grows": small["growth_min"] >= LENGTH_GROWTH_MIN,
        "biased_proxy_rises": small["proxy_rise_min"] >= PROXY_RISE_MIN,
        "unbiased_length_does_not_grow": unbiased["growth_max"] <= UNBIASED_GROWTH_MAX,
        "larger_beta_holds_length_back": large["growth_max"] <= small["growth_min"] - HOLD_BACK_MIN}
    margins = {"biased_length_grows": small["growth_min"] - LENGTH_GROWTH_MIN,
               "biased_proxy_rises": small["proxy_rise_min"] - PROXY_RISE_MIN,
               "unbiased_length_does_not_grow": UNBIASED_GROWTH_MAX - unbiased["growth_max"],
               "larger_beta_holds_length_back": small["growth_min"] - HOLD_BACK_MIN
               - large["growth_max"]}
    return {"measured": measured, "spread": spread, "verdicts": verdicts, "margins": margins,
            "claim_holds": all(verdicts.values())}


def plot(results: dict, args) -> None:
    """What each proxy pays for padding, before RL; then per step, for every run: response
    length, proxy and gold."""
    start = results["start"]["length"]
    fig, (pay_ax, length_ax, proxy_ax, gold_ax) = new_figure(
        4, f"PPO against reward models from labels with a length bias of {LENGTH_BIAS} and none")
    # one colour per arm; each reward model shares the colour of its smallest-beta runs
    colors = {"biased": "C0", "unbiased": "C1",
              **{f"biased_beta_{b:g}": f"C{i + 2}" for i, b in enumerate(BETAS[1:])}}
    for labeller, rm in results["reward_models"].items():
        p = rm["by_padding"]
        pay_ax.plot(p["length"], p["score"], color=colors[labeller], marker=".",
                    label=f"{labeller} proxy")
        pay_ax.plot(p["length"][p["best_k"]], p["score"][p["best_k"]], color=colors[labeller],
                    marker="*", markersize=10, linestyle="none")
    pay_ax.axvline(start, color="gray", linestyle=":", label="SFT samples' mean length")
    pay_ax.axvline(start * (1 + LENGTH_GROWTH_MIN), color="gray", linestyle="--",
                   label=f"+{LENGTH_GROWTH_MIN:.0%}")
    pay_ax.set_xlabel("response length (tokens): right answer + k empty steps")
    pay_ax.set_title("before RL: proxy of a right answer padded (std)", fontsize=9)
    labelled = set()
    for name, r in results["runs"].items():
        arm = name.rsplit("_seed_", 1)[0]
        color = colors.get(arm, colors[arm.split("_")[0]])
        style = dict(color=color, linewidth=1, label=None if arm in labelled else
                     f"PPO, {arm.replace('_', ' ')}")
        labelled.add(arm)
        length_ax.plot(r["step"], r["length"], **style)
        proxy_ax.plot(r["step"], smooth(r["proxy"], 5), **style)
        gold_ax.plot(r["step"], r["gold"], **style)
    length_ax.axhline(start, color="gray", linestyle=":")
    length_ax.axhline(start * (1 + LENGTH_GROWTH_MIN), color="gray", linestyle="--")
    length_ax.set_title("response length (rollouts, tokens)", fontsize=9)
    proxy_ax.set_title("proxy: reward-model score (5-step mean, std)", fontsize=9)
    gold_ax.set_title("gold: verifier on the rollouts (5-step mean)", fontsize=9)
    pay_ax.legend(fontsize=7)
    length_ax.legend(fontsize=7)
    save_figure(fig, args, "rlhf_length")
