"""compare.py: two runs' curves in one figure and their final numbers in one table."""
import csv
import json

import pytest

import compare


def fake_run(folder, final_accuracy, lr, steps=20, finished=True):
    """A run folder as the scripts write it: metrics.csv (step 0 the start, held-out accuracy
    every 10 steps) and, when finished, summary.json with its config."""
    folder.mkdir()
    rows = [{"step": 0, "eval_accuracy": 0.4}]
    for step in range(1, steps + 1):
        row = {"step": step, "reward": 0.4 + step / 100, "entropy": 0.1}
        if step % 10 == 0:
            row["eval_accuracy"] = 0.4 + (final_accuracy - 0.4) * step / steps
        rows.append(row)
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "reward", "entropy", "eval_accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    if finished:
        (folder / "summary.json").write_text(json.dumps({
            "start_accuracy": 0.4, "final_accuracy": final_accuracy, "wall_seconds": 12.0,
            "config": {"lr": lr, "steps": steps, "out_dir": str(folder)}}))
    return str(folder)


def test_two_runs_side_by_side(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0.75, lr=6e-5)
    b = fake_run(tmp_path / "b", 0.5, lr=1e-5)
    out = tmp_path / "cmp.png"
    assert compare.main([a, b, "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    lines = capsys.readouterr().out.splitlines()
    header, row_a, row_b = lines[0].split(), lines[2].split(), lines[3].split()
    assert header[:4] == ["run", "last", "step", "start"]
    # final accuracy, and the one flag the runs differ in (out_dir is not a flag that differs)
    assert row_a[:5] == [a, "20", "0.400", "0.750", "12"] and row_a[-1] == "6e-05"
    assert row_b[:5] == [b, "20", "0.400", "0.500", "12"] and row_b[-1] == "1e-05"
    assert "--lr" in header and "--out_dir" not in header and "--steps" not in header
    # the default metrics are those every run has: here the held-out accuracy, reward, entropy
    assert [h for h in header if h in compare.DEFAULT_METRICS] == ["eval_accuracy", "reward",
                                                                   "entropy"]


def test_metrics_by_name_and_an_unfinished_run(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0.75, lr=6e-5)
    b = fake_run(tmp_path / "b", 0.5, lr=6e-5, steps=15, finished=False)
    assert compare.main([a, b, "--metrics", "entropy", "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "not finished" in out and out.splitlines()[0].split()[-1] == "entropy"
    assert out.splitlines()[3].split()[:4] == [b, "15", "0.400", "-"]


@pytest.mark.parametrize("argv, message", [
    (["{a}", "--metrics", "kl"], "no column 'kl'"),
    (["{a}", "{missing}"], "no metrics.csv"),
    (["{a}", "{a}"], "named twice"),
    (["{a}", "--smooth", "0"], "--smooth"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    a = fake_run(tmp_path / "a", 0.75, lr=6e-5)
    out = tmp_path / "c.png"
    argv = [w.format(a=a, missing=tmp_path / "none") for w in argv]
    assert compare.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
