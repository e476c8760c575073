"""SFT data: a little goes far, it teaches the format but not the knowledge, and pre-training and
SFT are the same loss.

Claims (the lecture): "a small amount of SFT data greatly improves the model"; "SFT, being small,
does not learn knowledge the way pre-training does"; "the line between pre-training and SFT is
blurring: both predict sequences; many now mix a little SFT data into pre-training".
Pre-training here is sft.py's own next-token loss on another corpus (--corpus traces): the
demonstrations with their tags written as plain characters, every token a target. It holds the
knowledge (the carry trace and the sum) and none of the format. Then SFT on N formatted
demonstrations (--n_demonstrations N, cycled; the same 60 steps for every N), from the pre-trained
model and from random weights; and a mixed run: pre-training on traces of which MIXED_FRACTION are
formatted demonstrations, no SFT stage.
Held-out greedy accuracy and format rate are sft.py's. The pre-trained model's knowledge is its
accuracy in its own plain form (the sum its greedy continuation ends with). The mixed model is
also scored behind R1's template, whose prompt ends with <think> (CS336's r1_zero prompt too):
without it a prompt is also the start of a plain document, and the model continues it in the form
its corpus holds more of.
The claims hold if, at N_SMALL demonstrations: from the pre-trained model, format >= FORMAT_MIN
and accuracy >= KEEP_MIN x the pre-trained model's plain accuracy (a little data goes far); from
random weights, format >= FORMAT_MIN and accuracy <= SCRATCH_ACCURACY_MAX (the format, not the
knowledge); and the mixed model behind the template has format >= FORMAT_MIN and accuracy >=
KEEP_MIN x the pre-trained model's plain accuracy (no SFT stage needed).
"""
from __future__ import annotations

import os

import torch

import sft
from experiments.common import new_figure, read_summary, save_figure, train_script
from runs import load_checkpoint
from toy_model import EOS, AdditionTask, Tokenizer, encode_prompts, generate, reward_fn

DESCRIPTION = ("SFT on N demonstrations from a pre-trained model and from random weights; "
               "pre-training with a few demonstrations mixed in")

# Thresholds, fixed before the full run (after exploring the settings below).
N_SMALL = 512  # "a small amount": a few hundred demonstrations, 1/40 of the pre-training text
FORMAT_MIN = 0.9  # follows the format: held-out greedy format rate at least this
KEEP_MIN = 0.8  # keeps most of the knowledge: accuracy >= 0.8 x the pre-trained model's
SCRATCH_ACCURACY_MAX = 0.05  # from random weights the same N give (almost) no arithmetic
# The runs. Pre-training and the mixed run, beside sft.py's defaults: 300 steps of 64 documents.
PRETRAIN = dict(corpus="traces", steps=300, eval_every=300, samples_every=1000)
MIXED_FRACTION = 0.1
MIXED = dict(PRETRAIN, corpus="mixed", mixed_fraction=MIXED_FRACTION)
NS = (8, 32, 128, 512, 2048)  # demonstrations per SFT run, each cycled
NS_QUICK = (2, 8)
# SFT on N demonstrations, from either start, beside sft.py's defaults: 60 steps of 64 (3,840
# documents read, N of them distinct) at lr 3e-4, a fine-tuning rate: at 1e-3 a few dozen
# demonstrations wipe out more of the pre-trained arithmetic.
SFT = dict(steps=60, lr=3e-4, warmup_steps=5, eval_every=60, samples_every=1000)
STARTS = {"pre-trained": "pretrained", "random weights": "scratch"}  # label -> run name prefix
COLORS = {"pre-trained": "tab:blue", "random weights": "tab:gray", "mixed": "tab:green"}


def run(args) -> dict:
    out = lambda name: os.path.join(args.out_dir, "sft_data", name)  # noqa: E731
    train_script(sft, args, "sft_data/pretrain", **PRETRAIN)
    pretrained = os.path.join(out("pretrain"), "model.pt")
    train_script(sft, args, "sft_data/mixed", **MIXED)
    n_test = 16 if args.quick else 500
    knowledge = plain_accuracy(pretrained, n_test)
    ns = NS_QUICK if args.quick else NS
    curves = {label: [] for label in STARTS}
    for label, prefix in STARTS.items():
        start = pretrained if label == "pre-trained" else None
        for n in ns:
            name = f"sft_data/{prefix}_{n}"
            train_script(sft, args, name, init_checkpoint=start, n_demonstrations=n, **SFT)
            s = read_summary(args, name)
            curves[label].append({"n": n, "steps": s["steps"], "accuracy": s["final_accuracy"],
                                  "format_rate": s["final_format_rate"]})
    mixed = read_summary(args, "sft_data/mixed")
    mixed_read = round(mixed["config"]["steps"] * mixed["config"]["batch_size"]
                       * MIXED_FRACTION)  # formatted demonstrations it read, on average
    results = {
        "pretrained": {"plain_accuracy": knowledge,
                       **template_evaluation(pretrained, n_test),
                       "accuracy": read_summary(args, "sft_data/pretrain")["final_accuracy"],
                       "format_rate": read_summary(args, "sft_data/pretrain")[
                           "final_format_rate"]},
        "sft": curves,
        "mixed": {"mixed_fraction": MIXED_FRACTION, "formatted_read": mixed_read,
                  "accuracy": mixed["final_accuracy"], "format_rate": mixed["final_format_rate"],
                  "plain_accuracy": plain_accuracy(os.path.join(out("mixed"), "model.pt"),
                                                   n_test),
                  **template_evaluation(os.path.join(out("mixed"), "model.pt"), n_test)}}
    plot(results, args)

    few = {label: next(p for p in points if p["n"] == (ns[-1] if args.quick else N_SMALL))
           for label, points in curves.items()}
    goes_far = (few["pre-trained"]["format_rate"] >= FORMAT_MIN
                and few["pre-trained"]["accuracy"] >= KEEP_MIN * knowledge)
    format_not_knowledge = (few["random weights"]["format_rate"] >= FORMAT_MIN
                            and few["random weights"]["accuracy"] <= SCRATCH_ACCURACY_MAX)
    m = results["mixed"]
    mixed_follows = (m["template_format_rate"] >= FORMAT_MIN
                     and m["template_accuracy"] >= KEEP_MIN * knowledge)
    return {**results, "n_small": N_SMALL, "small_sft_goes_far": goes_far,
            "sft_gives_format_not_knowledge": format_not_knowledge,
            "mixed_pretraining_follows_format": mixed_follows}


@torch.inference_mode()
def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The greedy continuation of each prompt (all of one length), decoded."""
    ids, mask = generate(model, encode_prompts(tokenizer, prompts, "cpu"), max_new_tokens,
                         tokenizer.eos_id, tokenizer.pad_id, temperature=0.0)
    return [tokenizer.decode(row[:n]) for row, n in zip(ids.tolist(), mask.sum(1).tolist())]


def plain_accuracy(checkpoint: str, n_test: int) -> float:
    """What a model knows in plain text: the share of held-out prompts whose greedy continuation
    ends with "=SUM<|endoftext|>", the right sum (sft.plain_document's form)."""
    model, _ = load_checkpoint(checkpoint)
    task, tokenizer = AdditionTask(3, n_test), Tokenizer()
    texts = greedy(model, tokenizer, [p.prompt for p in task.test], task.max_new_tokens)
    return sum(t.endswith(f"={p.answer}{EOS}") for p, t in zip(task.test, texts)) / len(texts)


def template_evaluation(checkpoint: str, n_test: int) -> dict:
    """Held-out greedy accuracy and format rate behind R1's template: the prompt ends with
    <think>, and the response it continues is scored with it (reward_fn)."""
    model, _ = load_checkpoint(checkpoint)
    task, tokenizer = AdditionTask(3, n_test), Tokenizer()
    texts = greedy(model, tokenizer, [p.prompt + "<think>" for p in task.test],
                   task.max_new_tokens - 1)
    scores = [reward_fn("<think>" + t, p.answer) for p, t in zip(task.test, texts)]
    return {"template_accuracy": sum(s["answer_reward"] for s in scores) / len(scores),
            "template_format_rate": sum(s["format_reward"] for s in scores) / len(scores)}


def plot(results: dict, args) -> None:
    """Accuracy and format rate against N (log scale), one line per start, with the pre-trained
    model's plain accuracy; and the two models that had no SFT stage, side by side."""
    fig, (acc, fmt, no_sft) = new_figure(3, "SFT on N demonstrations from a pre-trained model "
                                            "and from random weights; pre-training with 10% mixed in")
    for label, points in results["sft"].items():
        for ax, key in ((acc, "accuracy"), (fmt, "format_rate")):
            ax.plot([p["n"] for p in points], [p[key] for p in points], marker="o",
                    color=COLORS[label], label=f"SFT from {label}")
    acc.axhline(results["pretrained"]["plain_accuracy"], color=COLORS["pre-trained"],
                linestyle="--", label="the pre-trained model, in plain text")
    for ax, title in ((acc, "held-out greedy accuracy"), (fmt, "held-out greedy format rate")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N formatted demonstrations (60 steps)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    bars = [("plain\naccuracy", "plain_accuracy"), ("bare\nformat", "format_rate"),
            ("<think>\nformat", "template_format_rate"), ("<think>\naccuracy", "template_accuracy")]
    for offset, name, values in ((-0.2, "pre-trained", results["pretrained"]),
                                 (0.2, "mixed", results["mixed"])):
        drawn = no_sft.bar([i + offset for i in range(len(bars))],
                           [values[key] for _, key in bars], width=0.4, color=COLORS[name],
                           label="pre-trained (traces only)" if name == "pre-trained" else
                           "mixed pre-training")
        no_sft.bar_label(drawn, fmt="%.2f", fontsize=7)  # a 0 shows as a number, not nothing
    no_sft.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
    no_sft.set_xlabel("")
    no_sft.set_ylim(0, 1.1)
    no_sft.set_title(f"no SFT stage ({results['mixed']['mixed_fraction']:.0%} mixed in)",
                     fontsize=9)
    no_sft.legend(fontsize=7)
    save_figure(fig, args, "sft_data")
