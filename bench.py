"""Benchmark: how fast is each training step, and how close to what this machine can do?

Measures, in one process on one device, fp32:
  peak           the machine's own matrix-multiply speed (GFLOP/s) at the same thread count;
  generation     128 completions x 24 new tokens (16 prompts x 8 samples), with and without
                 the KV cache;
  sft_step       one SFT step: 128 demonstrations, forward, backward, AdamW;
  grpo_step      one GRPO step, 16 prompts x 8 completions x exactly 24 new tokens (end-of-text
                 suppressed), beta 0.04 with a reference model, one AdamW step, split into
                 generation, reference pass, policy forward, backward and optimiser;
  ppo_step       the same rollout with PPO: old-policy, reference and critic passes without
                 gradient, GAE, one policy and critic forward, backward and AdamW step;
  scripts        a tenth of the steps of each default grpo.py, ppo.py and dpo.py run (full
                 evaluations), with a timer on every model forward, backward and optimiser step
                 and a count of their FLOPs;
  grpo_run       the whole default grpo.py run, ten times its tenth: its FLOPs over the matmul
                 peak (the time a perfect implementation would take), and the real time as a
                 multiple of that.
The steps are representative, not the scripts' exact defaults (grpo.py's beta is 0, ppo.py
runs 2 epochs x 2 minibatches and clips its value loss); the script runs are the real code.
Every step is timed in turn, round after round (warm-up rounds first), so that the machine's
drift falls on all figures alike; each figure is the median over the timed rounds, and `noise`
is (max - min) / median.

FLOPs count the workload, not the implementation: with N = non-embedding parameters plus the
output head, a forward pass costs 2N per token, a backward pass 4N; generation is each distinct
prompt's prefill once, then one forward per new token but the last (never fed back); attention's
own FLOPs are left out (small at these lengths).

Run:  python bench.py            about 90 s on a 2-core CPU; prints a table, writes JSON
      python bench.py --quick    a few seconds, same fields (for the tests)
"""
from __future__ import annotations

import contextlib
import copy
import io
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from gae import gae_advantages, whiten
from runs import peak_rss_mib, require, run_script, write_json
from toy_model import (GPT, AdditionTask, GPTConfig, ScalarHead, Tokenizer, encode_prompts, generate,
                       get_response_log_probs, masked_mean, tokenize_prompt_and_output)


@dataclass
class Config:
    # --- workload ---
    prompts: int = 16  # distinct prompts per RL step
    group_size: int = 8  # completions per prompt
    new_tokens: int = 24  # tokens generated per completion (end-of-text suppressed)
    threads: int = 2  # torch CPU threads, for the steps and the matmul peak alike
    # --- measurement ---
    repeats: int = 7  # timed rounds of every step (each figure is the median over them)
    warmup: int = 2  # untimed rounds first
    quick: bool = False  # 2 repeats, 1 warm-up, 4 prompts x 4, smaller matmul, tiny script runs: for the tests
    device: str = "cpu"  # cpu, cuda or mps (auto is not offered: a benchmark names its device)
    out: str = "out/bench/bench.json"  # where the JSON goes
    sft_checkpoint: str = "out/sft/model.pt"  # the scripts' starting model (trained if missing)

    def __post_init__(self):
        require(min(self.prompts, self.group_size, self.new_tokens, self.threads) >= 1,
                "--prompts, --group_size, --new_tokens and --threads must be >= 1")
        require(self.repeats >= 1 and self.warmup >= 0, "--repeats must be >= 1, --warmup >= 0")
        require(self.device in ("cpu", "cuda", "mps"), "--device must be cpu, cuda or mps")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mib_reset():
    """Reset the process's peak resident memory (Linux); later peak_rss_mib() reads it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(steps: dict, cfg) -> dict:
    """Time every step function in turn, round after round: `warmup` untimed rounds, then
    `repeats` timed ones. A shared machine's speed drifts by 10% or more within a minute; taking
    the figures in turn lets the drift fall on all of them alike, so that their ratios (fraction of
    the peak, cache speed-up) compare like with like. Each function returns {phase: seconds}.
    Returns, per step: phases (the median of each), total (the median of the totals), noise
    ((max - min) / median of the totals) and peak_rss_mib (the process's peak while it ran, on
    Linux; elsewhere the reset does nothing and it is the peak since the process started)."""
    for _ in range(cfg.warmup):
        for fn in steps.values():
            fn()
    runs, rss = {name: [] for name in steps}, dict.fromkeys(steps, 0.0)
    for _ in range(cfg.repeats):
        for name, fn in steps.items():
            peak_rss_mib_reset()
            runs[name].append(fn())
            rss[name] = max(rss[name], peak_rss_mib())
    out = {}
    for name, parts in runs.items():
        totals = [sum(r.values()) for r in parts]
        out[name] = {"phases": {k: statistics.median(r[k] for r in parts) for k in parts[0]},
                     "total": statistics.median(totals),
                     "noise": (max(totals) - min(totals)) / statistics.median(totals),
                     "peak_rss_mib": rss[name]}
    return out


class Timer:
    """Accumulates wall time per named phase: with timer("backward"): ..."""

    def __init__(self, device):
        self.device, self.parts = device, {}

    def __call__(self, name):
        timer = self

        class _Phase:
            def __enter__(self):
                sync(timer.device)
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                sync(timer.device)
                timer.parts[name] = timer.parts.get(name, 0.0) + time.perf_counter() - self.t
        return _Phase()


def script_runs(quick: bool, device: str, sft_checkpoint: str) -> dict:
    """A tenth of each default run (quick: a few steps), as functions of an output folder."""
    import dpo, grpo, ppo
    tenth = dict(grpo=dict(steps=48), ppo=dict(steps=15), dpo=dict(steps=20, n_prompts=205))
    if quick:
        tenth = dict(grpo=dict(steps=2, rollout_batch_size=16, train_batch_size=16, gradient_accumulation_steps=1),
                     ppo=dict(steps=2, prompts_per_step=8), dpo=dict(steps=2, n_prompts=64, batch_size=8))
    common = dict(n_test=32 if quick else 500, device=device, sft_checkpoint=sft_checkpoint)
    return {"grpo.py": lambda out: grpo.train(grpo.Config(**tenth["grpo"], **common, out_dir=out)),
            "ppo.py": lambda out: ppo.train(ppo.Config(**tenth["ppo"], **common, out_dir=out)),
            "dpo.py": lambda out: dpo.train(dpo.Config(**tenth["dpo"], **common, out_dir=out))}


def model_seconds(run, device, n_flop_params: int) -> dict:
    """Run `run()` with a timer around every model forward (the outermost GPT call), every
    backward and every optimiser step (gradient clipping included); everything else the script
    does (sampling, decoding, rewards, logging, evaluation bookkeeping) is the remainder. Also
    counts the run's FLOPs as the module docstring does: 2N per token of every forward, 4N more
    per token of a forward that records a gradient (its backward)."""
    spent, depth = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}, [0]
    flops = [0.0]

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            if depth[0]:  # already inside a timed call: count the outermost only
                return fn(*args, **kwargs)
            depth[0] += 1
            if key == "forward":  # args: (model, token ids (B, T), ...)
                flops[0] += (2 + 4 * torch.is_grad_enabled()) * n_flop_params * args[1].numel()
            sync(device)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(device)
                spent[key] += time.perf_counter() - t
                depth[0] -= 1
        return wrapper

    originals = {(GPT, "forward"): GPT.forward, (GPT, "hidden"): GPT.hidden,
                 (torch.Tensor, "backward"): torch.Tensor.backward,
                 (torch.optim.AdamW, "step"): torch.optim.AdamW.step,
                 (torch.nn.utils, "clip_grad_norm_"): torch.nn.utils.clip_grad_norm_}
    keys = {"forward": "forward", "hidden": "forward", "backward": "backward", "step": "optimizer",
            "clip_grad_norm_": "optimizer"}
    for (owner, attr), fn in originals.items():
        setattr(owner, attr, timed(fn, keys[attr]))
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the script's own log is not the bench's
            run()
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    wall = time.perf_counter() - start
    return {"wall": wall, **spent, "model": sum(spent.values()), "other": wall - sum(spent.values()),
            "flops": flops[0]}


def cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo), so that every figure names its machine."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]}, {len(names)} logical cores"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def main(cfg: Config):
    device = torch.device(cfg.device)
    if cfg.quick:  # every figure and field, none of them meaningful: for the tests
        cfg.repeats, cfg.warmup, cfg.prompts, cfg.group_size = 2, 1, 4, 4
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    tok, task = Tokenizer(), AdditionTask(3)
    max_seq_len = max(task.max_seq_len, task.prompt_len + cfg.new_tokens)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, max_seq_len=max_seq_len)).to(device)
    n_flop_params = sum(p.numel() for n, p in model.named_parameters() if "emb" not in n) \
        + model.head.weight.numel()  # head is tied to the embedding, but it is a matmul per token
    B, P, T = cfg.prompts * cfg.group_size, task.prompt_len, cfg.new_tokens
    prompts = task.sample(cfg.prompts, np.random.default_rng(0))
    prompt_ids = encode_prompts(tok, [p.prompt for p in prompts], device)  # (prompts, P)
    results = {"device": str(device), "cpu": cpu_model(), "torch": torch.__version__,
               "threads": cfg.threads, "n_flop_params": n_flop_params}

    # 1. The machine's matrix-multiply peak.
    n = 512 if cfg.quick else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    def matmul():
        t = Timer(device)
        with t("matmul"):
            for _ in range(10):
                a @ b
        return t.parts

    # 2. Generation with and without the KV cache.
    # prefill each prompt once, then T - 1 one-token forwards (the last token is never fed back)
    gen_flops = 2 * n_flop_params * (cfg.prompts * P + B * (T - 1))
    def generation(use_cache):
        t = Timer(device)
        with t("generate"):
            generate(model, prompt_ids, T, tok.eos_id, tok.pad_id, num_samples=cfg.group_size,
                     min_new_tokens=T, use_cache=use_cache)
        return t.parts

    # 3. One SFT step on B demonstrations.
    policy = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    demos = task.sample(B, np.random.default_rng(1))
    batch = tokenize_prompt_and_output([p.prompt for p in demos], [p.demonstration for p in demos], tok)
    batch = {k: v.to(device) for k, v in batch.items()}
    def sft_step():
        t = Timer(device)
        with t("forward"):
            lp = get_response_log_probs(policy, batch["input_ids"], batch["labels"])["log_probs"]
            loss = -(lp * batch["response_mask"]).sum(-1).mean()
        with t("backward"):
            loss.backward()
        with t("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return t.parts

    # 4. One GRPO step: rollout, reference pass, policy forward, loss, backward, AdamW.
    reference = copy.deepcopy(model).requires_grad_(False)
    beta, cliprange = 0.04, 0.2
    rl_flops = gen_flops + (2 + 2 + 4) * n_flop_params * B * (P + T - 1)  # + ref fwd, policy fwd+bwd
    def grpo_step():
        t = Timer(device)
        with t("generation"):
            response_ids, response_mask = generate(policy, prompt_ids, T, tok.eos_id, tok.pad_id,
                                                   num_samples=cfg.group_size, min_new_tokens=T)
            seq = torch.cat([prompt_ids.repeat_interleave(cfg.group_size, 0), response_ids], 1)
            input_ids, labels = seq[:, :-1], seq[:, 1:]
            mask = torch.cat([torch.zeros(B, P - 1, device=device), response_mask.float()], 1)  # (B, P+T-1)
            advantages = torch.randn(B, 1, device=device)  # the reward is not what is timed
        with t("reference"):
            with torch.inference_mode():
                ref_log_probs = get_response_log_probs(reference, input_ids, labels)["log_probs"]
        with t("policy_forward"):
            log_probs = get_response_log_probs(policy, input_ids, labels)["log_probs"]
            old_log_probs = log_probs.detach()  # on-policy: the first forward gives them
            ratio = torch.exp(log_probs - old_log_probs)
            surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - cliprange, 1 + cliprange) * advantages)
            log_ratio = ref_log_probs - log_probs
            k3 = torch.exp(log_ratio) - log_ratio - 1
            loss = masked_mean(-surrogate + beta * k3, mask, dim=1).mean()
        with t("backward"):
            loss.backward()
        with t("optimizer"):
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return t.parts

    # 5. One PPO step as ppo.py takes it: rollout; old log-probs, reference log-probs and values in
    #    inference mode; per-token KL reward and GAE; one policy and critic forward, backward, AdamW.
    critic = ScalarHead(copy.deepcopy(model)).to(device)  # ppo.py's critic: a transformer + scalar head
    critic_optimizer = torch.optim.AdamW(critic.parameters(), lr=1e-4)
    # old log-probs, reference, old values: 3 forwards; policy and critic: forward + backward each
    ppo_flops = gen_flops + (3 * 2 + 2 * 6) * n_flop_params * B * (P + T - 1)
    def ppo_step():
        t = Timer(device)
        with t("generation"):
            response_ids, response_mask = generate(policy, prompt_ids, T, tok.eos_id, tok.pad_id,
                                                   num_samples=cfg.group_size, min_new_tokens=T)
            seq = torch.cat([prompt_ids.repeat_interleave(cfg.group_size, 0), response_ids], 1)
            input_ids, labels = seq[:, :-1], seq[:, 1:]
            response = slice(P - 1, None)  # positions whose label is a response token
            mask = response_mask.float()  # (B, T)
        with t("no_grad_passes"):  # old log-probs, reference log-probs and old values
            with torch.inference_mode():
                old_log_probs = get_response_log_probs(policy, input_ids, labels)["log_probs"][:, response]
                ref_log_probs = get_response_log_probs(reference, input_ids, labels)["log_probs"][:, response]
                old_values = critic(input_ids)[:, response]
        with t("advantage"):
            rewards = -beta * (old_log_probs - ref_log_probs) * mask
            rewards[:, -1] += 1.0
            advantages = gae_advantages(rewards, old_values, mask, 1.0, 0.95)
            returns = advantages + old_values
            advantages = whiten(advantages, mask)
        with t("forward"):  # policy and critic
            log_probs = get_response_log_probs(policy, input_ids, labels)["log_probs"][:, response]
            ratio = torch.exp(log_probs - old_log_probs)
            surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - cliprange, 1 + cliprange) * advantages)
            values = critic(input_ids)[:, response]
            loss = masked_mean(-surrogate, mask) + 0.5 * masked_mean((values - returns) ** 2, mask)
        with t("backward"):
            loss.backward()
        with t("optimizer"):
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            optimizer.step()
            critic_optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            critic_optimizer.zero_grad(set_to_none=True)
        return t.parts

    # Measure them all, in turn (see measure), then turn seconds into the figures.
    m = measure({"matmul": matmul, "cached": lambda: generation(True), "uncached": lambda: generation(False),
                 "sft_step": sft_step, "grpo_step": grpo_step, "ppo_step": ppo_step}, cfg)
    results["peak_gflops"] = 10 * 2 * n ** 3 / m["matmul"]["total"] / 1e9

    def fraction(flops, seconds):
        return flops / seconds / 1e9 / results["peak_gflops"]

    results["generation"] = {}
    for name in ("cached", "uncached"):
        seconds = m[name]["total"]
        results["generation"][name] = {"s": seconds, "completions_per_s": B / seconds,
                                       "tokens_per_s": B * T / seconds, "noise": m[name]["noise"],
                                       "peak_fraction": fraction(gen_flops, seconds)}
    results["generation"]["cache_speedup"] = m["uncached"]["total"] / m["cached"]["total"]
    # tokens/s: SFT counts every position it trains on; the RL steps count the sampled tokens
    sft_tokens = batch["input_ids"].numel()
    for name, tokens, flops in (("sft_step", sft_tokens, 6 * n_flop_params * sft_tokens),
                                ("grpo_step", B * T, rl_flops), ("ppo_step", B * T, ppo_flops)):
        seconds = m[name]["total"]
        results[name] = {"s_per_step": seconds, "tokens_per_s": tokens / seconds,
                         "peak_fraction": fraction(flops, seconds), "peak_rss_mib": m[name]["peak_rss_mib"],
                         "noise": m[name]["noise"], "split_s": m[name]["phases"]}

    # 6. Where the scripts' own runs spend their time: a tenth of each default run (same code,
    #    same per-step work), with every model forward, backward and optimiser step timed.
    results["scripts"] = {}
    for name, run in script_runs(cfg.quick, cfg.device, cfg.sft_checkpoint).items():
        with tempfile.TemporaryDirectory() as out_dir:
            seconds = model_seconds(lambda: run(out_dir), device, n_flop_params)
        flops = seconds.pop("flops")
        results["scripts"][name] = {"s": seconds["wall"], "model_fraction": seconds["model"] / seconds["wall"],
                                    "flops": flops, "peak_fraction": fraction(flops, seconds["wall"]),
                                    **{f"{k}_s": v for k, v in seconds.items() if k != "wall"}}
    # The whole default grpo.py run: ten times the tenth above, against a perfect implementation
    # that runs every FLOP at the matmul peak. An upper bound on both: later steps skip more rows
    # (--skip_zero_advantage), so they cost fewer FLOPs and less time than the first tenth's.
    tenth = results["scripts"]["grpo.py"]
    results["grpo_run"] = {"flops": 10 * tenth["flops"], "s_at_peak": 10 * tenth["flops"] / 1e9
                           / results["peak_gflops"], "s_estimated": 10 * tenth["s"]}

    # Report.
    g = results["generation"]
    print(f"device {device} | CPU {results['cpu']} | torch {results['torch']} | {cfg.threads} "
          f"threads | {n_flop_params:,} FLOP-counted parameters | median of {cfg.repeats} after "
          f"{cfg.warmup} warm-up")
    print(f"matmul peak               {results['peak_gflops']:8.1f} GFLOP/s")
    print(f"generation, KV cache      {g['cached']['tokens_per_s']:8.0f} tokens/s  "
          f"{g['cached']['completions_per_s']:7.0f} completions/s  noise {g['cached']['noise']:.0%}")
    print(f"generation, no cache      {g['uncached']['tokens_per_s']:8.0f} tokens/s  "
          f"{g['uncached']['completions_per_s']:7.0f} completions/s  (cache is {g['cache_speedup']:.1f}x faster)")
    for name in ("sft_step", "grpo_step", "ppo_step"):
        r = results[name]
        split = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["split_s"].items())
        print(f"{name:<25} {r['s_per_step']:8.3f} s/step  {r['tokens_per_s']:8.0f} tokens/s  "
              f"{r['peak_fraction']:5.1%} of peak  peak RSS {r['peak_rss_mib']:.0f} MiB  "
              f"noise {r['noise']:.0%}\n{'':26}{split}")
    share = "a few steps (--quick)" if cfg.quick else "a tenth of the default run"
    for name, r in results["scripts"].items():
        print(f"{name:<10} ({share}) {r['s']:6.1f} s: {r['model_fraction']:.0%} in the model "
              f"(forward {r['forward_s']:.1f} s, backward {r['backward_s']:.1f} s, optimizer "
              f"{r['optimizer_s']:.1f} s), {r['other_s']:.1f} s elsewhere; "
              f"{r['flops'] / 1e12:.2f} TFLOP, {r['peak_fraction']:.1%} of peak")
    run = results["grpo_run"]
    times = "10x its first tenth" if not cfg.quick else "10x the few steps (--quick)"
    print(f"whole grpo.py run ({times}, upper bounds: later steps skip more rows): "
          f"{run['flops'] / 1e12:.1f} TFLOP = {run['s_at_peak']:.1f} s at the matmul peak; "
          f"{run['s_estimated']:.0f} s here, {run['s_estimated'] / run['s_at_peak']:.1f}x that")
    write_json(cfg.out, results)
    print(f"wrote {cfg.out}")


if __name__ == "__main__":
    run_script(main, Config, __doc__)
