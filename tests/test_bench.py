"""bench.py --quick runs and writes its JSON with every field the README and the issue name."""
import json
import math

import pytest

from conftest import run_in_process

# The keys (a dot is a nested object) and a few more; script names keep their ".py".
KEYS = [("peak_gflops",), ("generation", "cached", "tokens_per_s"), ("generation", "uncached", "tokens_per_s"),
        ("generation", "cache_speedup"), ("grpo_step", "s_per_step"), ("grpo_step", "tokens_per_s"),
        ("grpo_step", "peak_fraction"), ("grpo_step", "peak_rss_mib"), ("ppo_step", "s_per_step"),
        ("ppo_step", "peak_fraction"), ("sft_step", "tokens_per_s"), ("sft_step", "peak_fraction"),
        ("scripts", "grpo.py", "model_fraction"), ("scripts", "ppo.py", "model_fraction"),
        ("scripts", "dpo.py", "model_fraction"), ("scripts", "grpo.py", "flops"),
        ("grpo_run", "flops"), ("grpo_run", "s_at_peak"), ("grpo_run", "s_estimated")]


@pytest.mark.extended  # with -m extended: bench.py --quick, the default model's run
def test_quick_bench_writes_every_field(default_sft, no_curves, tmp_path):
    out = tmp_path / "bench.json"  # the scripts start from the suite's SFT model (none is trained)
    proc = run_in_process("bench.py", "--quick", "--out", out, "--sft_checkpoint", default_sft[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    for key in KEYS:
        value = results
        for part in key:
            value = value[part]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    for name in ("grpo.py", "ppo.py", "dpo.py"):
        assert 0 < results["scripts"][name]["model_fraction"] <= 1
    assert results["generation"]["cache_speedup"] > 1  # the KV cache must not be slower on a CPU
    assert "matmul peak" in proc.stdout and "cache is" in proc.stdout


def test_script_flops_count_forwards_and_backwards():
    """2N FLOPs per token of a forward, 4N more when it records a gradient; nested GPT calls
    (forward -> hidden) and the reference's inference-mode pass are counted once, as forwards."""
    import torch
    import bench
    from toy_model import GPT, GPTConfig
    model = GPT(GPTConfig())
    n = 1000  # any N: the count is linear in it

    def run():
        model(torch.zeros(3, 5, dtype=torch.long)).sum().backward()  # 15 tokens, forward+backward
        with torch.inference_mode():
            model.hidden(torch.zeros(2, 4, dtype=torch.long))  # 8 tokens, forward only
    seconds = bench.model_seconds(run, torch.device("cpu"), n)
    assert seconds["flops"] == 6 * n * 15 + 2 * n * 8


def test_bad_flag_exits_2_with_one_line(tmp_path):
    proc = run_in_process("bench.py", "--threads", "0", "--out", str(tmp_path / "b.json"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "b.json").exists()


def test_measure_takes_the_steps_in_turn_and_reports_medians():
    """Rounds interleave the steps (a, b, a, b, ...), warm-up rounds are not timed, and each figure
    is the median over the timed rounds of the step's phases and total."""
    from types import SimpleNamespace

    from bench import measure
    calls, times = [], {"a": iter([9.0, 1.0, 3.0, 2.0]), "b": iter([9.0, 5.0, 5.0, 6.0])}

    def step(name):
        calls.append(name)
        t = next(times[name])
        return {"first": t, "second": 2 * t}
    m = measure({"a": lambda: step("a"), "b": lambda: step("b")}, SimpleNamespace(warmup=1, repeats=3))
    assert calls == ["a", "b"] * 4
    assert m["a"]["phases"] == {"first": 2.0, "second": 4.0} and m["a"]["total"] == 6.0
    assert m["b"]["total"] == 15.0 and abs(m["a"]["noise"] - (9.0 - 3.0) / 6.0) < 1e-12
    assert m["a"]["peak_rss_mib"] > 0
