"""toy_model.py: task, tokenizer, model with KV cache, sampling, CS336 helpers, checkpoints."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runs import MetricLog, UserError, load_checkpoint, save_checkpoint
from evaluation import evaluate
from toy_model import (ABSTENTION, EOS, GPT, AdditionTask, GPTConfig, Problem, Tokenizer,
                       compute_entropy, encode_prompts, generate, get_response_log_probs,
                       masked_mean, masked_normalize, reward_fn, tokenize_prompt_and_output)

TOK = Tokenizer()


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{"n_layer": 2, "d_model": 32, "n_head": 4, **kw}))


# ---- task and reward -------------------------------------------------------------------------
def test_demonstration_format():
    p = Problem(357, 68, 3)
    assert p.prompt == "357+068="
    assert p.demonstration == "<think>7+8+0=15,5+6+1=12,3+0+1=04</think><answer>425</answer>" + EOS
    assert Problem(999, 999, 3).demonstration == (
        "<think>9+9+0=18,9+9+1=19,9+9+1=19</think><answer>1998</answer>" + EOS)
    task = AdditionTask(3)
    assert len(TOK.encode(p.prompt)) == task.prompt_len
    assert len(TOK.encode(Problem(999, 999, 3).demonstration)) == task.response_len


def test_reward_fn_each_case():
    right = "<think>7+8+0=15</think><answer>15</answer>" + EOS
    wrong = "<think>7+8+0=15</think><answer>16</answer>" + EOS
    zero = {"reward": 0.0, "format_reward": 0.0, "answer_reward": 0.0}
    assert reward_fn(right, "15") == {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}
    assert reward_fn(wrong, "15") == {"reward": 0.0, "format_reward": 1.0, "answer_reward": 0.0}
    assert reward_fn(right[:-len(EOS)], "15") == zero  # no end-of-text: truncated
    assert reward_fn("<answer>15</answer>" + EOS, "15") == zero  # no scratchpad
    assert reward_fn(right + "1", "15") == zero  # text after end-of-text
    assert reward_fn("<think></think><answer></answer>" + EOS, "15") == zero  # empty answer
    assert reward_fn("<think>1</think><answer>015</answer>" + EOS, "15")["answer_reward"] == 0.0


def test_reward_fn_abstention():
    right = "<think>7+8+0=15</think><answer>15</answer>" + EOS
    wrong = "<think>7+8+0=15</think><answer>16</answer>" + EOS
    zero = {"reward": 0.0, "format_reward": 0.0, "answer_reward": 0.0}
    assert Problem(357, 68, 3).abstention == ABSTENTION == "<think>?</think><answer>?</answer>" + EOS
    assert len(TOK.encode(ABSTENTION)) == 7
    assert reward_fn(ABSTENTION, "15") == zero  # the CS336 call: "?" is no answer at all
    assert reward_fn(ABSTENTION, "15", abstain_reward=0.25) == {
        "reward": 0.25, "format_reward": 1.0, "answer_reward": 0.0}
    assert reward_fn(ABSTENTION, "15", abstain_reward=0) == {"reward": 0.0, "format_reward": 1.0, "answer_reward": 0.0}
    for response in (right, wrong, "<think>1</think><answer>?</answer>" + EOS, ABSTENTION[:-len(EOS)]):
        assert reward_fn(response, "15", abstain_reward=0.25) == reward_fn(response, "15")
    assert reward_fn("<think>1</think><answer>?</answer>" + EOS, "15", abstain_reward=0.25) == zero


def test_heldout_never_sampled_and_deterministic():
    task = AdditionTask(2, n_test=500)
    test = {(p.a, p.b) for p in task.test}
    assert len(test) == 500
    train = task.sample(20000, np.random.default_rng(0))
    assert not test & {(p.a, p.b) for p in train}
    assert [(p.a, p.b) for p in AdditionTask(2).test] == [(p.a, p.b) for p in task.test]
    assert len(AdditionTask(1).test) == 20  # capped at a fifth of the 100 one-digit problems


# ---- tokenizer --------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_errors():
    text = Problem(12, 345, 3).prompt + Problem(12, 345, 3).demonstration
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text
    assert len(ids) == len("012+345=") + len(TOK.encode(Problem(12, 345, 3).demonstration))
    assert TOK.n_vocab == 20 and TOK.pad_id != TOK.eos_id
    assert TOK.decode([TOK.eos_id, TOK.pad_id]) == EOS + "<|pad|>"
    with pytest.raises(ValueError, match="'a'"):
        TOK.encode("12+a=")
    with pytest.raises(ValueError, match="20"):
        TOK.decode([1, 20])
    with pytest.raises(ValueError, match="-1"):
        TOK.decode([-1])


# ---- model, KV cache, sampling ----------------------------------------------------------------
def test_kv_cache_logits_match_full_forward():
    model = tiny_model().eval()
    ids = torch.randint(0, 18, (3, 12))
    full = model(ids)  # (3, 12, V)
    from toy_model import KVCache
    cache = KVCache(model.cfg, 3, "cpu")
    steps = [model(ids[:, :5], cache)]
    for t in range(5, 12):
        steps.append(model(ids[:, t:t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_written_out_attention_equals_torch_fused_attention():
    """Block's softmax(q k^T / sqrt(d)) v with its causal mask = F.scaled_dot_product_attention,
    for a whole sequence and for 3 new tokens after 5 cached ones (the mask's S - T offset)."""
    from toy_model import KVCache
    model = tiny_model().eval()
    block, x = model.blocks[0], torch.randn(3, 8, 32)
    with torch.no_grad():  # large weights: peaked attention, so a wrong mask or scale shows
        block.qkv.weight.normal_(0.0, 0.5)
    B, T, C = x.shape
    q, k, v = block.qkv(block.ln1(x)).view(B, T, 3, 4, C // 4).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    h = x + block.proj(y)
    expected = h + block.mlp(block.ln2(h))  # (3, 8, 32)
    torch.testing.assert_close(block(x, 0, None), expected, atol=1e-5, rtol=0)
    cache = KVCache(model.cfg, B, "cpu", max_len=8)
    block(x[:, :5], 0, cache)
    cache.pos = 5
    torch.testing.assert_close(block(x[:, 5:], 0, cache), expected[:, 5:], atol=1e-5, rtol=0)


def test_kv_cache_copied_per_sample_matches_full_forward():
    """Prefill 2 prompts once, give each 3 copies, extend every row by its own tokens: the same
    logits as running each full row from scratch."""
    model = tiny_model().eval()
    from toy_model import KVCache
    prompts, extra = torch.randint(0, 18, (2, 5)), torch.randint(0, 18, (6, 4))
    rows = torch.cat([prompts.repeat_interleave(3, dim=0), extra], dim=1)  # (6, 9): rows 0-2 share a prompt
    cache = KVCache(model.cfg, 2, "cpu", max_len=9)
    first = model(prompts, cache)[:, -1].repeat_interleave(3, dim=0)  # (6, V)
    cache.repeat_interleave(3)
    assert cache.k.shape == (2, 6, 4, 9, 8)
    steps = [first[:, None]] + [model(extra[:, t:t + 1], cache) for t in range(4)]
    full = model(rows)[:, 4:]  # logits after position 4 (the prompt's last) onwards
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generation_same_with_and_without_cache():
    model = tiny_model()
    prompts = encode_prompts(TOK, [p.prompt for p in AdditionTask(3).test[:6]], "cpu")
    a = generate(model, prompts, 20, TOK.eos_id, TOK.pad_id, temperature=0.0)
    b = generate(model, prompts, 20, TOK.eos_id, TOK.pad_id, temperature=0.0, use_cache=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_samples_of_one_prompt_differ_at_temperature_one():
    model = tiny_model()
    prompt = encode_prompts(TOK, ["123+456="], "cpu")
    torch.manual_seed(0)
    ids, _ = generate(model, prompt, 5, TOK.eos_id, TOK.pad_id, num_samples=16, temperature=1.0)
    assert len(set(ids[:, 0].tolist())) > 1


def test_same_seed_same_samples_different_seed_different():
    model = tiny_model()
    prompts = encode_prompts(TOK, ["123+456=", "999+001="], "cpu")
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(generate(model, prompts, 10, TOK.eos_id, TOK.pad_id, num_samples=4)[0])
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_response_mask_stops_after_end_of_text():
    model = tiny_model()
    bias = torch.zeros(TOK.n_vocab)
    bias[TOK.eos_id] = 1.5  # make end-of-text common so that rows end at different steps
    model.head.register_forward_hook(lambda m, i, out: out + bias)
    prompt = encode_prompts(TOK, ["12+34="], "cpu")
    torch.manual_seed(0)
    ids, mask = generate(model, prompt, 12, TOK.eos_id, TOK.pad_id, num_samples=32)
    ended = 0
    for row, m in zip(ids.tolist(), mask.tolist()):
        if TOK.eos_id in row:
            end = row.index(TOK.eos_id)
            ended += 1
            assert m == [1] * (end + 1) + [0] * (len(row) - end - 1)  # end-of-text included
            assert all(t == TOK.pad_id for t in row[end + 1:])
        else:
            assert m == [1] * len(row)
    assert 0 < ended < 32


def test_min_new_tokens_suppresses_end_of_text():
    model = tiny_model()
    bias = torch.zeros(TOK.n_vocab)
    bias[TOK.eos_id] = 20.0
    model.head.register_forward_hook(lambda m, i, out: out + bias)
    prompt = encode_prompts(TOK, ["12+34="], "cpu")
    ids, mask = generate(model, prompt, 8, TOK.eos_id, TOK.pad_id, num_samples=4, min_new_tokens=8)
    assert ids.shape == (4, 8) and mask.sum().item() == 32 and (ids != TOK.eos_id).all()


def test_suppress_ids_forbids_tokens_at_every_step():
    model = tiny_model()
    bias = torch.zeros(TOK.n_vocab)
    question_mark = TOK.encode("?")[0]
    bias[question_mark] = 20.0
    model.head.register_forward_hook(lambda m, i, out: out + bias)
    prompt = encode_prompts(TOK, ["12+34="], "cpu")
    ids, _ = generate(model, prompt, 8, TOK.eos_id, TOK.pad_id, temperature=0.0)
    assert (ids == question_mark).all()
    ids, _ = generate(model, prompt, 8, TOK.eos_id, TOK.pad_id, num_samples=4,
                      suppress_ids=(question_mark,))
    assert not (ids == question_mark).any()


# ---- CS336 helpers ----------------------------------------------------------------------------
def test_tokenize_prompt_and_output_masks_prompt_and_padding():
    # 4 + 4 and 6 + 3 tokens: 9 at most, so (2, 8) after the shift; row 0 ends in one pad.
    out = tokenize_prompt_and_output(["1+2=", "12+34="], ["<answer>3</answer>" + EOS, "46" + EOS], TOK)
    assert out["input_ids"].shape == out["labels"].shape == out["response_mask"].shape == (2, 8)
    assert out["response_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 1]]
    assert out["labels"][0].tolist() == TOK.encode("+2=<answer>3</answer>" + EOS) + [TOK.pad_id]
    assert out["input_ids"][1].tolist() == TOK.encode("12+34=46")
    assert out["labels"][1].tolist() == TOK.encode("2+34=46" + EOS)


def test_padded_batch_log_probs_equal_each_alone():
    model = tiny_model().eval()
    prompts, outputs = ["12+34=", "5+6=", "999+1="], ["46" + EOS, "<think>1</think>" + EOS, "1" + EOS]
    batch = tokenize_prompt_and_output(prompts, outputs, TOK)
    lp = get_response_log_probs(model, batch["input_ids"], batch["labels"])["log_probs"]
    for i in range(3):
        one = tokenize_prompt_and_output(prompts[i:i + 1], outputs[i:i + 1], TOK)
        alone = get_response_log_probs(model, one["input_ids"], one["labels"])["log_probs"][0]
        n = alone.shape[0]
        torch.testing.assert_close(lp[i, :n], alone, atol=1e-6, rtol=0)
        assert masked_normalize(lp[i], batch["response_mask"][i]).item() == pytest.approx(
            masked_normalize(alone, one["response_mask"][0]).item(), abs=1e-6)


def test_get_response_log_probs_is_minus_cross_entropy():
    model = tiny_model()
    ids = torch.randint(0, 20, (4, 10))
    labels = torch.randint(0, 20, (4, 10))
    out = get_response_log_probs(model, ids, labels, return_token_entropy=True)
    ce = F.cross_entropy(model(ids).reshape(-1, 20), labels.reshape(-1), reduction="none").view(4, 10)
    torch.testing.assert_close(out["log_probs"], -ce, atol=1e-6, rtol=0)
    assert out["token_entropy"].shape == (4, 10)
    hot = get_response_log_probs(model, ids, labels, temperature=0.5)["log_probs"]
    ce2 = F.cross_entropy(model(ids).reshape(-1, 20) / 0.5, labels.reshape(-1), reduction="none")
    torch.testing.assert_close(hot, -ce2.view(4, 10), atol=1e-6, rtol=0)


def test_compute_entropy():
    assert compute_entropy(torch.zeros(3, 7)).tolist() == pytest.approx([math.log(7)] * 3, abs=1e-6)
    logits = torch.randn(5, 11) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(compute_entropy(logits), expected, atol=1e-6, rtol=0)
    huge = compute_entropy(torch.randn(4, 9) * 1e4)
    assert torch.isfinite(huge).all() and (huge >= 0).all()


def test_masked_mean_and_normalize_handout_example():
    # Two responses of lengths 4 and 7, every token's loss 2: the per-sequence mean treats them
    # alike, a constant normaliser (Dr. GRPO, 7 = the longest) weights the longer one more.
    losses = torch.full((2, 7), 2.0)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7])
    assert masked_mean(losses, mask, dim=1).tolist() == pytest.approx([2.0, 2.0], abs=1e-6)
    assert masked_normalize(losses, mask, dim=1, normalize_constant=7).tolist() == pytest.approx(
        [8 / 7, 2.0], abs=1e-6)
    assert masked_normalize(losses, mask, dim=1, normalize_constant=7)[0].item() == pytest.approx(1.1429, abs=1e-4)
    assert masked_mean(losses, mask).item() == pytest.approx(2.0, abs=1e-6)
    assert masked_normalize(losses, mask).item() == pytest.approx(22.0, abs=1e-6)
    assert math.isnan(masked_mean(losses, torch.zeros(2, 7), dim=1)[0].item())  # 0/0, as in CS336


# ---- evaluation, checkpoints, logs ------------------------------------------------------------
def test_evaluate_counts_rewards():
    model = tiny_model(max_seq_len=48)
    task = AdditionTask(3, n_test=20)
    metrics, samples = evaluate(model, TOK, task.test, task.max_new_tokens)
    assert len(samples) == 20 and metrics["accuracy"] == 0.0  # an untrained model gets nothing right
    assert metrics["entropy"] > 0 and 1 <= metrics["response_len"] <= task.max_new_tokens


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_model()
    path = str(tmp_path / "model.pt")
    save_checkpoint(path, model, digits=2, run_config={"lr": 1.0})
    loaded, ckpt = load_checkpoint(path, digits=2)
    ids = torch.randint(0, 20, (2, 9))
    assert torch.equal(loaded(ids), model(ids)) and ckpt["run_config"] == {"lr": 1.0}
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="2-digit"):
        load_checkpoint(path, digits=3)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(str(tmp_path / "bad.pt"))
    state = torch.load(path, weights_only=True)
    state["state_dict"].pop("ln_f.weight")
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(str(tmp_path / "partial.pt"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_metric_log_csv_and_plot(tmp_path):
    log = MetricLog()
    log.append({"step": 1, "loss": 1.0})
    log.append({"step": 2, "loss": 0.5, "eval_accuracy": 0.25})
    log.write_csv(str(tmp_path / "m.csv"))
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,loss,eval_accuracy", "1,1.0,", "2,0.5,0.25"]
    log.plot(str(tmp_path / "c.png"), [("loss", ["loss"]), ("acc", ["eval_accuracy"])])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
