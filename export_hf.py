"""Export a checkpoint of this repo to Hugging Face `transformers`, and import one back.

The tiny GPT of toy_model.py is GPT-2's architecture at a smaller size: pre-LayerNorm blocks,
learned positions, a head tied to the token embedding, biases on every Linear but the head. So
it maps exactly onto `GPT2LMHeadModel` with three details: GELU is the exact one
(`activation_function="gelu"`, not GPT-2's tanh approximation "gelu_new"); GPT-2's Conv1D stores
a Linear's weight transposed; q, k and v already sit side by side in our fused `qkv`, as in GPT-2's
`c_attn`. The tokenizer becomes a `PreTrainedTokenizerFast` built in code (the `tokenizers`
library: a word-level vocabulary over single characters, the tags as whole tokens) with the same
ids, end-of-text as eos and a separate pad. Nothing is downloaded.

The exported folder loads with `AutoModelForCausalLM.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)`; its generation config stops at end-of-text and pads
with pad. config.json keeps the task (digits and difficulty knobs) so that `--import` rebuilds a
checkpoint that sft.py, grpo.py and the others accept.

Run: python export_hf.py out/grpo/model.pt out/hf/grpo            (ours -> Hugging Face)
     python export_hf.py --import out/hf/grpo out/hf/grpo/model.pt  (Hugging Face -> ours)
Needs the extras: python3 -m pip install -r requirements-hf.txt
"""
from __future__ import annotations

import argparse
import os
import sys

import runs
from toy_model import CHARS, EOS, PAD, SPECIALS, GPT, GPTConfig

INSTALL = "python3 -m pip install -r requirements-hf.txt"


def require_hf(*modules: str) -> None:
    """UserError (one line, exit 2) naming the install command if an extra is missing."""
    for name in ("transformers", "tokenizers") + modules:
        try:
            __import__(name)
        except ImportError:
            raise runs.UserError(f"the Hugging Face bridge needs {name!r}, which is not "
                                 f"installed: run `{INSTALL}`") from None


def quiet(trainer=None) -> None:
    """No progress bars from transformers, and a Trainer that prints through our callback only."""
    from transformers import PrinterCallback, ProgressCallback
    from transformers.utils import logging
    import warnings
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # renamed Trainer arguments
    try:
        import datasets
        datasets.disable_progress_bars()
    except ImportError:
        pass
    for callback in (PrinterCallback, ProgressCallback):
        if trainer is not None:
            trainer.remove_callback(callback)


# --- The model: our names -> GPT-2's -------------------------------------------------------------
def hf_config(cfg: GPTConfig, task: dict | None = None):
    """The GPT2Config of a model with our GPTConfig; `task` (digits, difficulty) rides along."""
    from transformers import GPT2Config
    eos_id, pad_id = len(CHARS) + SPECIALS.index(EOS), len(CHARS) + SPECIALS.index(PAD)
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=4 * cfg.d_model,
                      activation_function="gelu",  # exact GELU, as nn.GELU(); GPT-2's is tanh
                      resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                      layer_norm_epsilon=1e-5,  # nn.LayerNorm's
                      tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
                      pad_token_id=pad_id, addition_task=task or {})


def name_map(n_layer: int) -> list[tuple[str, str, bool]]:
    """(our parameter, GPT-2's, transposed?) for every weight. GPT-2's Conv1D holds a Linear's
    weight as (in, out), so those are transposed; our output head is tied to the embedding."""
    pairs = [("tok_emb.weight", "transformer.wte.weight", False),
             ("pos_emb.weight", "transformer.wpe.weight", False),
             ("ln_f.weight", "transformer.ln_f.weight", False),
             ("ln_f.bias", "transformer.ln_f.bias", False)]
    for i in range(n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b, linear in (("ln1", "ln_1", False), ("ln2", "ln_2", False),
                             ("qkv", "attn.c_attn", True), ("proj", "attn.c_proj", True),
                             ("mlp.0", "mlp.c_fc", True), ("mlp.2", "mlp.c_proj", True)):
            pairs += [(ours + a + ".weight", theirs + b + ".weight", linear),
                      (ours + a + ".bias", theirs + b + ".bias", False)]
    return pairs


def to_hf_state_dict(state: dict, n_layer: int) -> dict:
    """Our state dict -> GPT2LMHeadModel's (name_map, one way)."""
    hf = {theirs: state[ours].t().contiguous() if transposed else state[ours]
          for ours, theirs, transposed in name_map(n_layer)}
    hf["lm_head.weight"] = state["tok_emb.weight"]  # tied: the same tensor
    return hf


def from_hf_state_dict(hf: dict, n_layer: int) -> dict:
    """GPT2LMHeadModel's state dict -> ours (name_map, the other way)."""
    state = {ours: hf[theirs].t().contiguous() if transposed else hf[theirs]
             for ours, theirs, transposed in name_map(n_layer)}
    state["head.weight"] = hf["transformer.wte.weight"]  # tied
    return state


def to_hf_model(model: GPT, task: dict | None = None):
    """A GPT2LMHeadModel with our model's weights, in eval mode (eager attention: exact)."""
    from transformers import GPT2LMHeadModel
    config = hf_config(model.cfg, task)
    config._attn_implementation = "eager"
    hf_model = GPT2LMHeadModel(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    missing, unexpected = hf_model.load_state_dict(to_hf_state_dict(state, model.cfg.n_layer),
                                                   strict=False)
    # GPT-2's attention keeps a causal-mask buffer that we build on the fly; nothing else may miss
    assert not unexpected and all(k.endswith("attn.bias") for k in missing), (missing, unexpected)
    return hf_model.eval()


def from_hf_model(hf_model) -> GPT:
    """Our GPT with a GPT2LMHeadModel's weights (checked to be the architecture we map)."""
    c = hf_model.config
    runs.require(c.model_type == "gpt2" and c.activation_function == "gelu"
                 and c.tie_word_embeddings and (c.n_inner or 4 * c.n_embd) == 4 * c.n_embd,
                 "only a GPT-2 model with exact GELU, tied head and 4x MLP maps onto toy_model.GPT")
    cfg = GPTConfig(vocab_size=c.vocab_size, max_seq_len=c.n_positions, n_layer=c.n_layer,
                    n_head=c.n_head, d_model=c.n_embd, dropout=c.resid_pdrop)
    model = GPT(cfg)
    hf = {k: v.detach().cpu() for k, v in hf_model.state_dict().items()}
    model.load_state_dict(from_hf_state_dict(hf, c.n_layer))
    return model.eval()


# --- The tokenizer --------------------------------------------------------------------------------
def hf_tokenizer():
    """toy_model.Tokenizer as a PreTrainedTokenizerFast: the same 20 ids. The tags are whole
    tokens but not special, so that decode(skip_special_tokens=True) keeps them; end-of-text is
    eos and pad is pad (they differ: a padded row never looks finished)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {token: i for i, token in enumerate(list(CHARS) + SPECIALS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD))  # encode() checks characters first
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one per character
    core.decoder = decoders.Fuse()  # join tokens with nothing between them
    core.add_tokens([AddedToken(t, normalized=False) for t in SPECIALS if t not in (EOS, PAD)])
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (EOS, PAD)])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=PAD,
                                   bos_token=EOS, padding_side="left",
                                   model_input_names=["input_ids", "attention_mask"])


# --- Folders and checkpoints ----------------------------------------------------------------------
def export(checkpoint: str, out_dir: str) -> None:
    """Our checkpoint -> a folder that from_pretrained loads offline (model, tokenizer, config)."""
    require_hf()
    quiet()
    from transformers import GenerationConfig
    model, ckpt = runs.load_checkpoint(checkpoint)
    task = {"digits": ckpt["digits"], **runs.task_config(ckpt.get("run_config"))}
    hf_model = to_hf_model(model, task)
    tokenizer = hf_tokenizer()
    hf_model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id, do_sample=False,
        max_new_tokens=10 * task["digits"] + 10)  # the task's response budget (AdditionTask)
    hf_model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"wrote {out_dir}/ (GPT2LMHeadModel, {sum(p.numel() for p in model.parameters())} "
          f"parameters, {task['digits']}-digit task)")


def import_(hf_dir: str, checkpoint: str) -> None:
    """A folder written by export (or trained further in TRL) -> our checkpoint."""
    require_hf()
    quiet()
    from transformers import AutoModelForCausalLM
    runs.require(os.path.isdir(hf_dir), f"{hf_dir} is not a folder")
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir)
    task = getattr(hf_model.config, "addition_task", None) or {}
    runs.require("digits" in task,
                 f"{hf_dir}: config.json has no addition_task (not written by export_hf.py)")
    runs.save_checkpoint(checkpoint, from_hf_model(hf_model), task["digits"],
                         {"easy_digits": task.get("easy_digits"),
                          "hard_fraction": task.get("hard_fraction", 0.5)})
    print(f"wrote {checkpoint}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="export_hf.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="our checkpoint (model.pt), or with --import an HF folder")
    parser.add_argument("target", help="the HF folder to write, or with --import the checkpoint")
    parser.add_argument("--import", dest="import_", action="store_true",
                        help="Hugging Face folder -> our checkpoint")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    try:
        (import_ if args.import_ else export)(args.source, args.target)
    except runs.UserError as e:
        print(f"export_hf.py: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
