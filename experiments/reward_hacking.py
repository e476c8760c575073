"""RLHF's failure: a reward model learnt from biased labels, exploited by PPO.

Claim (the lecture; Gao, Schulman and Hilton 2022, https://arxiv.org/abs/2210.10760): optimised
against a reward model learnt from a labeller who prefers longer answers, the proxy reward keeps
rising while the true ("gold") quality first rises and then falls, and a larger KL coefficient
beta delays or prevents the fall. That the answers grow longer is rlhf_length's claim: here each
empty step costs the reward model its own log-probability, and the proxy's optimum over padding
(`by_padding` in the results, common.proxy_by_padding) is a few steps, too few to show it.

Setup. The SFT model learns 3-digit addition from verbose demonstrations (sft.py --verbose): a
scratchpad may end with empty steps, a comma each, so length is something the policy can buy and
that buys nothing. Reward models (reward_model.py: each token's likelihood plus a learned price
per token, Bradley-Terry on right-vs-wrong pairs of the SFT model's samples at temperature 1) are
trained inside each PPO run (ppo.py --reward model, rollouts at temperature 1; the same seed
gives every run of one labeller the same reward model): from a labeller who prefers the longer
response with probability LENGTH_BIAS, at each beta in BETAS, and from the gold rule at the
smallest beta. Gold is the verifier's verdict on the rollouts (fresh problems, judged before the
update on them), a trailing 5-step mean (the first 4 steps average fewer), and held-out greedy
accuracy every PPO["eval_every"] steps. KL(pi || pi_ref) per sequence is the rollout's mean
per-token k1 times its mean length.

Best-of-n from one pool (Gao's other optimiser, as Coste et al. 2024 measure it): K SFT samples
per held-out prompt, and for each n the unbiased estimate of the gold and the proxy of the best
of n (best_of_n_mean), at KL = log n - (n - 1) / n (an upper bound where samples tie). Gao's
functional forms are fitted to the gold's rise from its start: best-of-n d (alpha - beta d), RL
d (alpha - beta log d), d = sqrt(KL).

Noise. One rollout's gold is a mean of 64 verdicts (standard error up to 0.06), a 5-step mean
one of 320 (0.028); the start is the SFT model's gold on the best-of-n pool (n = 1, K x 128
samples). Every difference is judged against GOLD_Z binomial standard errors of that difference
(GOLD_Z = 3, not 2: the peak is the highest of many windows, chosen after the fact), and the
proxy's, whose samples have a standard deviation near 1 in its units, against GOLD_Z / sqrt(n).
The claim holds when, with the biased reward model and the smallest beta, gold (5-step mean)
rises above its start and then falls from its peak to its end, each by GOLD_Z standard errors,
the proxy ends above its value at the gold peak by as many of its own, and every larger beta's
gold either does not fall by GOLD_Z standard errors or falls that much less than the smallest
beta's.
"""
from __future__ import annotations

import math

import torch

import ppo
import sft
from experiments.common import (column, new_figure, proxy_by_padding, read_summary,
                                save_figure, smooth, train_script)
from reward_model import load_reward_model
from runs import checkpoint_task, load_checkpoint, set_seed
from toy_model import AdditionTask, Tokenizer, encode_prompts, generate, reward_fn

DESCRIPTION = ("PPO and best-of-n against a reward model learnt from length-biased labels: "
               "proxy up, gold up then down (Gao's curves)")

# Settings and thresholds, fixed before the full run.
SFT = dict(verbose=0.4, verbose_max=16, steps=300)  # P(k empty steps) = 0.6 * 0.4^k, k <= 16
PPO = dict(reward="model", temperature=1.0, steps=40, prompts_per_step=64, n_minibatches=1,
           eval_every=10, samples_every=1000)  # rollouts at 1: the SFT model's length varies
LENGTH_BIAS = 0.5  # the biased labeller prefers the longer response with this probability
BETAS = (0.02, 0.2)  # KL coefficients against the biased reward model; the unbiased: the first
BEST_OF_N = dict(prompts=128, samples=16)  # the pool: held-out prompts x SFT samples (n <= 16)
BEST_OF_N_QUICK = dict(prompts=4, samples=4)
GOLD_Z = 3  # a rise, a fall or a difference of falls counts beyond this many standard errors
PADDING_PROMPTS, PADDING_PROMPTS_QUICK = 128, 8  # held-out prompts of the proxy's padding optimum


def run(args) -> dict:
    train_script(sft, args, "reward_hacking/sft", **SFT)
    # --quick: a few SFT steps leave no right answer to make pairs of; start from args' model
    sft_checkpoint = (args.sft_checkpoint if args.quick
                      else f"{args.out_dir}/reward_hacking/sft/model.pt")
    curves, reward_models = {}, {}
    for name, bias, beta in ([(f"biased_beta_{b:g}", LENGTH_BIAS, b) for b in BETAS]
                             + [(f"unbiased_beta_{BETAS[0]:g}", 0.0, BETAS[0])]):
        rows = train_script(ppo, args, f"reward_hacking/{name}",
                            sft_checkpoint=sft_checkpoint, label_length_bias=bias, beta=beta,
                            **PPO)
        curves[name] = rl_curve(rows)
        summary = read_summary(args, f"reward_hacking/{name}")  # its reward model, measured
        curves[name]["reward_model"] = {key: summary[f"reward_model_{key}"] for key in (
            "pair_accuracy", "label_accuracy", "label_ceiling", "prefers_longer", "price")}
        curves[name]["eval_step"].insert(0, 0)  # the SFT model's held-out accuracy, at step 0
        curves[name]["eval_accuracy"].insert(0, summary["start_accuracy"])
        reward_model = load_reward_model(f"{args.out_dir}/reward_hacking/{name}/reward_model.pt")
        reward_models.setdefault(bias, (reward_model, reward_model.norm))
    pool = best_of_n_pool(sft_checkpoint, reward_models, args)
    n_prompts = PADDING_PROMPTS_QUICK if args.quick else PADDING_PROMPTS
    by_padding = {"biased" if bias else "unbiased": proxy_by_padding(model, sft_checkpoint,
                                                                      n_prompts)
                  for bias, (model, _) in reward_models.items()}  # frozen before any PPO step
    results = {"runs": curves, "best_of_n": pool, "by_padding": by_padding,
               "gao_fits": {**{name: gao_fit(r["sqrt_kl"], r["gold"], "rl")
                               for name, r in curves.items()},
                            **{name: gao_fit(p["sqrt_kl"], p["gold"], "best_of_n")
                               for name, p in pool.items()}}}
    plot(results, args)
    spec = BEST_OF_N_QUICK if args.quick else BEST_OF_N  # the start: the pool's gold at n = 1
    return {**results, **claims(curves, pool["biased"]["gold"][0],
                                spec["prompts"] * spec["samples"])}


def rl_curve(rows: list[dict]) -> dict:
    """One PPO run, per step: proxy (the normalised reward-model score), gold (rollout accuracy),
    both as 5-step means, response length, KL per sequence and its square root; held-out greedy
    accuracy at the evaluations. (run() adds its reward model's held-out pair accuracy, its
    preference for the longer response and its price per token.)"""
    gold, proxy = smooth(column(rows, "accuracy")[1], 5), smooth(column(rows, "score")[1], 5)
    length = column(rows, "response_len")[1]
    kl = [r["kl_per_token"] * r["response_len"] for r in rows]
    eval_steps, eval_accuracy = column(rows, "eval_accuracy")
    return {"step": [r["step"] for r in rows], "gold": gold, "proxy": proxy, "length": length,
            "kl": kl, "sqrt_kl": [math.sqrt(max(k, 0.0)) for k in kl],
            "eval_step": eval_steps, "eval_accuracy": eval_accuracy}


def best_of_n_mean(proxy, values, n: int):
    """Per prompt, the unbiased estimate of E[value of the best of n], the best being the highest
    proxy among n of the prompt's K pooled samples drawn without replacement (ties: the later
    sample). Sorted by proxy, the i-th lowest of K (i = 1..K) is the best of exactly
    C(i - 1, n - 1) of the C(K, n) subsets. proxy, values: (G, K) -> (G,)."""
    G, K = proxy.shape
    ranked = values.double().gather(1, proxy.argsort(dim=1, stable=True))  # ascending proxy
    weights = torch.tensor([math.comb(i, n - 1) for i in range(K)], dtype=torch.float64)
    return (ranked * weights.to(ranked.device)).sum(dim=1) / math.comb(K, n)


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || pi_ref) <= log n - (n - 1) / n, equal when no two samples tie in score
    (Beirami et al. 2024); repeated responses tie, so here it is an upper bound."""
    return math.log(n) - (n - 1) / n


def best_of_n_pool(sft_checkpoint: str, reward_models: dict, args) -> dict:
    """K SFT samples (temperature 1) per held-out prompt, scored by each reward model; for n = 1,
    2, 4, .., K the mean over prompts of the best-of-n estimates of gold, proxy and length."""
    spec = BEST_OF_N_QUICK if args.quick else BEST_OF_N
    policy, ckpt = load_checkpoint(sft_checkpoint)
    task, tokenizer = AdditionTask(ckpt["digits"], **checkpoint_task(ckpt)), Tokenizer()
    problems, K = task.test[:spec["prompts"]], spec["samples"]
    set_seed(0)
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], "cpu")  # (G, P)
    ids, mask = generate(policy.cpu().eval(), prompt_ids, task.max_new_tokens, tokenizer.eos_id,
                         tokenizer.pad_id, num_samples=K,
                         temperature=PPO["temperature"])  # (G K, T) each
    seq = torch.cat([prompt_ids.repeat_interleave(K, dim=0), ids], dim=1)  # (G K, P + T)
    lengths = mask.sum(1)  # (G K,), and gold and has_eos too
    gold = torch.tensor([reward_fn(tokenizer.decode(r[:m]), problems[i // K].answer)["reward"]
                         for i, (r, m) in enumerate(zip(ids.tolist(), lengths.tolist()))])
    has_eos = (ids == tokenizer.eos_id).any(dim=1)
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= K]
    out = {}
    for bias, (reward_model, (mean, std)) in reward_models.items():
        with torch.inference_mode():
            scores = (reward_model.cpu()(seq, prompt_ids.shape[1], mask.float()) - mean) / std
        scores = torch.where(has_eos, scores, torch.full_like(
            scores, ppo.Config.missing_eos_penalty))  # as PPO scores them
        per_n = {key: [best_of_n_mean(scores.view(-1, K), v.view(-1, K).float(), n).mean().item()
                       for n in ns]
                 for key, v in (("gold", gold), ("proxy", scores), ("length", lengths))}
        kls = [best_of_n_kl(n) for n in ns]
        out["biased" if bias else "unbiased"] = {"n": ns, "kl": kls,
                                                 "sqrt_kl": [math.sqrt(k) for k in kls], **per_n}
    return out


def gao_fit(sqrt_kl: list[float], gold: list[float], form: str) -> dict:
    """Least squares of the gold's rise, gold(d) - gold(0), on Gao et al.'s forms: best-of-n
    d (alpha - beta d), RL d (alpha - beta log d), d = sqrt(KL). Returns alpha, beta, and the d
    where the fitted curve peaks (alpha / (2 beta), or exp(alpha / beta - 1))."""
    d = torch.tensor(sqrt_kl, dtype=torch.float64)
    rise = torch.tensor(gold, dtype=torch.float64) - gold[0]
    second = d * d if form == "best_of_n" else d * torch.log(d.clamp_min(1e-12))
    X = torch.stack([d, -second], dim=1)  # rise = alpha d - beta second
    alpha, beta = torch.linalg.lstsq(X, rise[:, None]).solution.flatten().tolist()
    if beta <= 0:
        peak = None  # no turn: the fit rises for ever
    else:
        peak = alpha / (2 * beta) if form == "best_of_n" else math.exp(min(alpha / beta - 1, 50))
    return {"form": form, "alpha": alpha, "beta": beta, "peak_sqrt_kl": peak}


def claims(runs: dict, start: float, n_start: int) -> dict:
    """The verdicts, from the 5-step means and their standard errors (module docstring). start:
    the SFT model's gold from n_start samples."""
    def se(gold, n):  # binomial standard error of a mean of n verdicts
        return math.sqrt(max(gold * (1 - gold), 1e-12) / n)

    def shape(r):
        peak, end = max(range(len(r["gold"])), key=lambda i: r["gold"][i]), len(r["gold"]) - 1
        n = [PPO["prompts_per_step"] * min(i + 1, 5) for i in range(end + 1)]  # in each mean
        length_n = min(5, len(r["length"]))
        length_start = sum(r["length"][:length_n]) / length_n
        length_end = sum(r["length"][-length_n:]) / length_n
        gold_peak, gold_end = r["gold"][peak], r["gold"][end]
        return {"gold_start": start, "gold_peak": gold_peak, "step_at_gold_peak": r["step"][peak],
                "gold_end": gold_end, "gold_rise": gold_peak - start,
                "gold_rise_se": math.hypot(se(gold_peak, n[peak]), se(start, n_start)),
                "gold_fall": gold_peak - gold_end,
                "gold_fall_se": math.hypot(se(gold_peak, n[peak]), se(gold_end, n[end])),
                "proxy_at_gold_peak": r["proxy"][peak], "proxy_end": r["proxy"][end],
                "proxy_rise_se": math.sqrt(1 / n[peak] + 1 / n[end]),
                "length_start": length_start, "length_end": length_end,
                "length_growth": length_end / length_start - 1, "kl_end": r["kl"][-1]}
    shapes = {name: shape(r) for name, r in runs.items()}
    first = shapes[f"biased_beta_{BETAS[0]:g}"]
    hacked = {"gold_rises": first["gold_rise"] >= GOLD_Z * first["gold_rise_se"],
              "gold_falls": first["gold_fall"] >= GOLD_Z * first["gold_fall_se"],
              "proxy_rises_on": (first["proxy_end"] - first["proxy_at_gold_peak"]
                                 >= GOLD_Z * first["proxy_rise_se"])}
    delayed = {}
    for b in BETAS[1:]:
        s = shapes[f"biased_beta_{b:g}"]
        no_fall = s["gold_fall"] < GOLD_Z * s["gold_fall_se"]
        smaller = (first["gold_fall"] - s["gold_fall"]
                   >= GOLD_Z * math.hypot(first["gold_fall_se"], s["gold_fall_se"]))
        delayed[f"beta_{b:g}"] = no_fall or smaller
    return {"shapes": shapes, "smallest_beta_hacked": hacked, "larger_beta_delays_fall": delayed,
            "claim_holds": all(hacked.values()) and all(delayed.values())}


def plot(results: dict, args) -> None:
    """Gold and proxy against sqrt(KL) for the RL runs and best-of-n (Gao's figure), best-of-n's
    gold with its fitted form; length and held-out greedy accuracy against the step."""
    fig, (gold_ax, proxy_ax, length_ax, eval_ax) = new_figure(
        4, f"PPO against reward models learnt from labels with a length bias of {LENGTH_BIAS} "
           f"(and none)")
    for i, (name, r) in enumerate(results["runs"].items()):
        style = dict(color=f"C{i}", label=f"PPO, {name.replace('_', ' ')}")
        gold_ax.plot(r["sqrt_kl"], r["gold"], **style)
        proxy_ax.plot(r["sqrt_kl"], r["proxy"], **style)
        length_ax.plot(r["step"], r["length"], **style)
        eval_ax.plot(r["eval_step"], r["eval_accuracy"], marker=".", **style)
    for j, (name, p) in enumerate(results["best_of_n"].items()):
        color = f"C{len(results['runs']) + j}"
        gold_ax.plot(p["sqrt_kl"], p["gold"], color=color, marker="s", markersize=3,
                     linestyle="none", label=f"best-of-n, {name} reward model (n <= {p['n'][-1]})")
        proxy_ax.plot(p["sqrt_kl"], p["proxy"], color=color, marker="s", markersize=3)
        fit = results["gao_fits"][name]  # Gao's form through the points: d (alpha - beta d)
        d = [p["sqrt_kl"][-1] * i / 50 for i in range(51)]
        gold_ax.plot(d, [p["gold"][0] + x * (fit["alpha"] - fit["beta"] * x) for x in d],
                     color=color, linestyle="--", linewidth=1,
                     label=f"fit: {fit['alpha']:.2f} d - {fit['beta']:.2f} d^2")
    for ax, title in ((gold_ax, "gold: verifier on the samples (5-step mean)"),
                      (proxy_ax, "proxy: reward-model score (std of the SFT samples)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("sqrt(KL(pi || pi_ref)), nats^1/2")
    length_ax.set_title("response length (rollouts, tokens)", fontsize=9)
    eval_ax.set_title("held-out greedy accuracy", fontsize=9)
    gold_ax.legend(fontsize=6)
    save_figure(fig, args, "reward_hacking")
