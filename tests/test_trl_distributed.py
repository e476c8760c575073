"""trl_grpo.py as a data-parallel job of 2 processes (torchrun, gloo on the CPU): the gradient of a
fixed batch split over 2 processes, 4 rows each, is the gradient of 1 process holding all 8; and a
2-process run trains with a world of 2 and writes every output file from one process only.
The 2-process halves run this file as a script under torchrun (its __main__ block below).
Skipped without the extras."""
import builtins
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import export_hf  # noqa: E402
from toy_model import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, T = 8, 12  # the fixed batch: 8 responses (2 prompts x 4) of at most 12 tokens
LOSS_TYPES = ("grpo", "dapo")  # per-response mean, and tokens counted over the whole batch


def torchrun(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ARGS` from the repository root, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fixed_batch(folder: str) -> dict:
    """8 rows as GRPOTrainer's loss takes them: real prompts of one width, right-padded responses,
    fixed advantages, and old log-probs off the policy's enough that the clip acts."""
    g = torch.Generator().manual_seed(0)
    tokenizer = Tokenizer()
    prompts = [tokenizer.encode(p) for p in ["12+34=", "57+68="] for _ in range(4)]
    lengths = torch.tensor([12, 9, 7, 12, 5, 10, 12, 3])[:, None]
    completion_mask = (torch.arange(T)[None] < lengths).long()  # (B, T)
    batch = {"prompt_ids": torch.tensor(prompts), "prompt_mask": torch.ones(ROWS, 6).long(),
             "completion_ids": torch.randint(0, 20, (ROWS, T), generator=g),
             "completion_mask": completion_mask,
             "advantages": torch.tensor([1.2, -0.4, 0.3, -1.1, 0.9, -0.8, 0.6, -0.7]),
             "num_items_in_batch": completion_mask.sum()}  # response tokens of the whole batch
    model, trainer = grpo_trainer(folder, "grpo", ROWS)
    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        current = trainer._get_per_token_logps_and_entropies(model, ids, mask, T)[0]
    return {**batch, "old_per_token_logps": current + 0.4 * torch.randn(ROWS, T, generator=g)}


def grpo_trainer(folder: str, loss_type: str, rows: int):
    """GRPOTrainer on the exported model, one micro-batch of `rows` per process per step."""
    args = trl.GRPOConfig(output_dir=os.path.join(folder, "trainer"), use_cpu=True,
                          per_device_train_batch_size=rows, gradient_accumulation_steps=1,
                          num_generations=4, max_completion_length=T, loss_type=loss_type,
                          epsilon=0.2, beta=0.0, bf16=False, report_to="none",
                          save_strategy="no")
    dataset = datasets.Dataset.from_list([{"prompt": "12+34="}] * ROWS)
    trainer = trl.GRPOTrainer(model=folder, reward_funcs=lambda completions, **_: [0.0],
                              args=args, train_dataset=dataset,
                              processing_class=export_hf.hf_tokenizer())
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    return trainer.model.train(), trainer


def gradient(folder: str, batch: dict, loss_type: str, sync: bool = True) -> list[torch.Tensor]:
    """This process's gradient of its share of the batch, as Trainer.training_step takes it:
    TRL's compute_loss, then accelerator.backward. In a world of N the model is prepared (DDP),
    so the backward averages the N gradients; sync=False skips that (this share alone)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    shard = {k: v if v.dim() == 0 else v[rows] for k, v in batch.items()}
    model, trainer = grpo_trainer(folder, loss_type, ROWS // world)
    wrapped = trainer.accelerator.prepare(model) if sync else model
    trainer.accelerator.backward(trainer.compute_loss(wrapped, shard))
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def folder(small_sft, tmp_path_factory):
    """The small SFT model, exported: TRL's trainers load it by path."""
    path = str(tmp_path_factory.mktemp("small_hf"))
    export_hf.export(small_sft[0], path)
    return path


def test_two_processes_average_to_the_one_process_gradient(folder, tmp_path):
    batch = fixed_batch(folder)
    torch.save(batch, tmp_path / "batch.pt")
    done = torchrun(__file__, "gradient", folder, str(tmp_path / "batch.pt"),
                    str(tmp_path / "sharded.pt"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = torch.load(tmp_path / "sharded.pt")
    whole = {loss_type: gradient(folder, batch, loss_type) for loss_type in LOSS_TYPES}  # 1 process
    for loss_type in LOSS_TYPES:
        assert len(sharded[loss_type]) == len(whole[loss_type]) > 0
        for a, b in zip(sharded[loss_type], whole[loss_type]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # the batch tells the shares apart: half of it alone gives another gradient
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(sharded["first_half"], whole["grpo"]))


FLAGS = ["--digits", "2", "--n_test", "50", "--steps", "2", "--rollout_batch_size", "16",
         "--train_batch_size", "16", "--gradient_accumulation_steps", "2", "--eval_every", "2",
         "--device", "cpu"]
OUTPUTS = ["metrics.csv", "curves.png", "model.pt", "summary.json", "hf/config.json",
           "start/config.json"]


@pytest.mark.extended
def test_two_process_run_writes_each_output_once(small_sft, tmp_path):
    out = tmp_path / "run"
    done = torchrun(__file__, "record", str(out), "trl_grpo.py", *FLAGS,
                    "--sft_checkpoint", small_sft[0], "--out_dir", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert summary["trl_config"]["per_device_train_batch_size"] == 4  # 16 / 2 steps / 2 processes
    # one process speaks: one header, which says 2 processes ran, and one end
    headers = [line for line in done.stdout.splitlines() if line.startswith("GRPO in TRL")]
    assert len(headers) == 1 and headers[0].endswith("| 2 processes, data parallel (gloo)")
    assert done.stdout.count("\ndone (") == 1
    # one process writes: each output once, by the main process, and no file by both
    writes = {rank: open(tmp_path / f"writes-rank{rank}.txt").read().split()
              for rank in (0, 1)}
    for name in OUTPUTS:
        path = str(out / name)
        assert (writes[0].count(path), writes[1].count(path)) == (1, 0), name
    assert not set(writes[0]) & set(writes[1])


def record_writes(out_dir: str, script: str, *args: str) -> None:
    """Run SCRIPT ARGS as __main__ with every file this process writes under out_dir (by open or
    by os.replace, as runs.atomic_write does) listed in writes-rank<RANK>.txt beside out_dir."""
    out_dir = os.path.abspath(out_dir)
    rank = os.environ.get("RANK", "0")
    listing = open(os.path.join(os.path.dirname(out_dir), f"writes-rank{rank}.txt"), "w")
    real_open, real_replace = builtins.open, os.replace

    def note(path):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(out_dir + os.sep):
            listing.write(path + "\n")
            listing.flush()

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            note(file)
        return real_open(file, mode, *a, **k)

    def replace(src, dst, *a, **k):
        note(dst)
        return real_replace(src, dst, *a, **k)

    builtins.open, os.replace = open_, replace
    sys.argv = [script, *args]
    runpy.run_path(os.path.join(ROOT, script), run_name="__main__")


if __name__ == "__main__":  # under torchrun: one of the 2 processes
    if sys.argv[1] == "gradient":  # FOLDER BATCH OUT: the sharded gradients, saved by rank 0
        folder, batch = sys.argv[2], torch.load(sys.argv[3])
        grads = {loss_type: gradient(folder, batch, loss_type) for loss_type in LOSS_TYPES}
        grads["first_half"] = gradient(folder, batch, "grpo", sync=False)
        if os.environ["RANK"] == "0":
            torch.save(grads, sys.argv[4])
    else:  # record OUT_DIR SCRIPT ARGS
        record_writes(*sys.argv[2:])
