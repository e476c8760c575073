"""export_hf.py: our GPT and tokenizer in Hugging Face `transformers` and back.

The exported model must be the same function (logits within 1e-5, the same greedy responses),
the import must give back the very same tensors, and the tokenizer the same ids. Then the trap of
scoring a learned-position model without position_ids: TRL's log-prob forward passes none, so
with fixed-width prompts a row scores the same alone or in a batch, and with left padding not.
Skipped without the extras (python3 -m pip install -r requirements-hf.txt)."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import run_in_process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import export_hf  # noqa: E402
import runs  # noqa: E402
from toy_model import (AdditionTask, GPTConfig, Tokenizer, encode_prompts,  # noqa: E402
                       generate)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(small_sft, tmp_path_factory):
    """(our model, the HF model loaded back from the exported folder, the folder, the task)."""
    checkpoint, _ = small_sft
    folder = str(tmp_path_factory.mktemp("hf") / "sft")
    export_hf.export(checkpoint, folder)
    model, ckpt = runs.load_checkpoint(checkpoint)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return model.eval(), hf_model, folder, AdditionTask(ckpt["digits"])


def held_out_sequences(task, model, n=64):
    """Held-out prompts with the model's own greedy responses: (n, P + T) ids."""
    tokenizer = Tokenizer()
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in task.test[:n]], "cpu")
    ids, _ = generate(model, prompt_ids, task.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                      temperature=0.0)
    return prompt_ids, torch.cat([prompt_ids, ids], dim=1)


def test_exported_logits_equal_ours(exported):
    model, hf_model, _, task = exported
    _, seq = held_out_sequences(task, model)
    with torch.no_grad():
        difference = (model(seq) - hf_model(seq).logits).abs().max().item()
    assert difference < 1e-5


def test_exported_greedy_generate_equals_ours(exported):
    model, hf_model, _, task = exported
    tokenizer = Tokenizer()
    prompt_ids, seq = held_out_sequences(task, model)
    ours = seq[:, prompt_ids.shape[1]:]  # (n, T): padding after end-of-text
    theirs = hf_model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                               max_new_tokens=task.max_new_tokens)[:, prompt_ids.shape[1]:]
    assert hf_model.generation_config.eos_token_id == tokenizer.eos_id
    assert hf_model.generation_config.pad_token_id == tokenizer.pad_id
    assert (ours == tokenizer.eos_id).any(dim=1).float().mean() > 0.9  # a model that finishes
    width = max(ours.shape[1], theirs.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=tokenizer.pad_id)
    assert torch.equal(pad(ours), pad(theirs))


def test_import_round_trips_exactly(exported, tmp_path):
    model, _, folder, task = exported
    back = str(tmp_path / "back.pt")
    export_hf.import_(folder, back)
    model_back, ckpt = runs.load_checkpoint(back, digits=task.digits)
    assert model_back.cfg == model.cfg
    ours, theirs = model.state_dict(), model_back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_tokenizer_matches_ours(exported):
    _, _, folder, task = exported
    ours, theirs = Tokenizer(), transformers.AutoTokenizer.from_pretrained(folder)
    texts = [p.prompt + p.demonstration for p in task.test[:20]] + ["<think>?</think>"]
    for text in texts:
        ids = theirs(text)["input_ids"]
        assert ids == ours.encode(text)
        assert theirs.decode(ids) == text
    assert (theirs.eos_token_id, theirs.pad_token_id) == (ours.eos_id, ours.pad_id)
    # TRL decodes completions with skip_special_tokens=True: the tags must survive it
    assert theirs.decode(ours.encode(texts[0]), skip_special_tokens=True) == texts[0][:-13]


def log_probs_without_position_ids(hf_model, ids, attention_mask, n_scored):
    """log p of the last n_scored tokens, as TRL scores them: input ids and attention mask only."""
    with torch.no_grad():
        logits = hf_model(input_ids=ids, attention_mask=attention_mask).logits[:, -n_scored - 1:-1]
    return torch.gather(logits.log_softmax(-1), -1, ids[:, -n_scored:, None]).squeeze(-1)


def test_fixed_width_prompts_score_alike_alone_and_batched(exported):
    """Ours are fixed-width, so no row is left-padded: batched = one row at a time. A left-padded
    row (a prompt one token shorter, as in a mixed-width batch) is scored at shifted positions."""
    model, hf_model, _, task = exported
    _, seq = held_out_sequences(task, model, n=8)
    n_scored = seq.shape[1] - task.prompt_len
    mask = torch.ones_like(seq)
    batched = log_probs_without_position_ids(hf_model, seq, mask, n_scored)
    alone = torch.cat([log_probs_without_position_ids(hf_model, seq[i:i + 1], mask[i:i + 1],
                                                      n_scored) for i in range(len(seq))])
    assert (batched - alone).abs().max() < 1e-5
    # the trap: the same row after one left pad and no position_ids is a different function
    left_padded = torch.cat([torch.full_like(seq[:, :1], Tokenizer().pad_id), seq], dim=1)
    left_mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
    shifted = log_probs_without_position_ids(hf_model, left_padded, left_mask, n_scored)
    assert (shifted - alone).abs().max() > 1e-2


def test_unmapped_architecture_is_refused():
    config = export_hf.hf_config(GPTConfig(n_layer=1, d_model=16, n_head=2))
    config.activation_function = "gelu_new"  # GPT-2's tanh GELU is another function
    with pytest.raises(runs.UserError, match="exact GELU"):
        export_hf.from_hf_model(transformers.GPT2LMHeadModel(config))


@pytest.mark.slow
def test_export_command_round_trip(small_sft, tmp_path):
    checkpoint, _ = small_sft
    run = lambda *a: run_in_process("export_hf.py", *a)  # the command line, in this process
    done = run(checkpoint, str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    done = run("--import", str(tmp_path / "hf"), str(tmp_path / "back.pt"))
    assert done.returncode == 0, done.stderr
    missing = run(str(tmp_path / "no.pt"), str(tmp_path / "x"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_missing_transformers_is_one_line_exit_2(tmp_path):
    """Hide transformers: the bridge says how to install it, in one line, exit code 2."""
    (tmp_path / "transformers.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "export_hf.py", "a.pt", str(tmp_path / "out")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "requirements-hf.txt" in done.stderr
