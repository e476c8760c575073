"""Shared fixtures. The RL tests start from one small SFT checkpoint trained once per session:
2-digit addition, a 2-layer width-64 model, 300 steps (about 5 s on 2 CPU cores), which leaves
held-out accuracy near 0.4 so that a short RL run has room to show learning."""
import contextlib
import io
import os
import runpy
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import runs  # noqa: E402
import sft  # noqa: E402

SMALL_SFT = dict(digits=2, n_layer=2, d_model=64, steps=300, eval_every=1000, samples_every=1000,
                 device="cpu", seed=0)


TRAINS_A_MODEL = {"small_sft", "default_sft"}  # tests that need a trained model are slow


def pytest_collection_modifyitems(config, items):
    """The fast tier (`-m "not slow"`) leaves out every test that trains a model first: learning
    checks, whole-script runs, resumes, experiments. What it keeps needs no training: the CS336
    functions, every loss, estimator and reduction, the tokenizer, generation, the flag checks."""
    for item in items:
        if TRAINS_A_MODEL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _two_threads():
    # CI and the reference numbers use 2 threads; OMP_NUM_THREADS=1 asks for one on a busy machine
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))


@contextlib.contextmanager
def drawing_no_curves():
    """Runs inside draw no curves.png: matplotlib lays out a run's panels in about a second, most
    of a tiny run's time. The curves are checked where they are the point: MetricLog.plot's own
    test, the Ctrl-C test and every script's smoke run (a real process)."""
    plot = runs.MetricLog.plot
    runs.MetricLog.plot = lambda self, path, panels, title="": None
    try:
        yield
    finally:
        runs.MetricLog.plot = plot


@pytest.fixture
def no_curves():
    """The test's runs draw no curves.png (see drawing_no_curves)."""
    with drawing_no_curves():
        yield


@pytest.fixture(scope="session")
def small_sft(tmp_path_factory):
    """(checkpoint path, summary) of the small SFT model that the RL tests start from."""
    out = tmp_path_factory.mktemp("sft")
    with drawing_no_curves():
        summary = sft.train(sft.Config(**SMALL_SFT, out_dir=str(out)))
    return str(out / "model.pt"), summary


@pytest.fixture(scope="session")
def default_sft(tmp_path_factory):
    """(checkpoint path, summary) of `python sft.py`'s default model (3 digits, 160 steps, ~20 s),
    for learning checks that the small model cannot give (RL barely moves it)."""
    out = tmp_path_factory.mktemp("sft_default")
    with drawing_no_curves():
        summary = sft.train(sft.Config(device="cpu", eval_every=1000, samples_every=1000,
                                       out_dir=str(out)))
    return str(out / "model.pt"), summary


def run_in_process(script: str, *args, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS`, run in this process: the script's __main__ block with sys.argv set,
    stdout and stderr captured, SystemExit turned into the exit code. Far faster than a new
    interpreter, which spends its first seconds importing torch. An uncaught exception (what a
    real run would print as a traceback) propagates and fails the test. The scripts' real command
    lines are still run as processes by each script's smoke test."""
    out, err = io.StringIO(), io.StringIO()
    argv, term, here, code = sys.argv, signal.getsignal(signal.SIGTERM), os.getcwd(), 0
    try:
        os.chdir(cwd)
        sys.argv = [script, *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
        signal.signal(signal.SIGTERM, term)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
