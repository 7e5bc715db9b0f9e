"""The paper's two towers on two processes (tinyalexnet/parallel/towers.py, model_parallel.py).

The reference is the one-process model with ``groups=2`` (models/alexnet.py): two ranks
running the towers must compute what it computes, to 1e-10 relative in float64.
``pytest -k model_parallel`` selects these tests; those with two ranks run
tests/towers_worker.py under ``mpiexec -n 2``.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpi_runs
from tinyalexnet.errors import ConfigError
from tinyalexnet.layers import functional
from tinyalexnet.models import get_model
from tinyalexnet.parallel import launch
from tinyalexnet.parallel.model_parallel import Peer, Towers
from tinyalexnet.parallel.towers import check_towers, join_state, split_state
from tinyalexnet.parallel.towers_bench import crossings

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "towers_worker.py"
BOUND = 1e-10          # float64; measured about 2e-15 (sums in another order)


def run_two(args, module="tinyalexnet", timeout=300):
    """``mpiexec -n 2 python -m MODULE args...`` (a MODULE ending in .py: that script) from the
    repository root, through parallel/launch.py; returns its stdout."""
    pytest.importorskip("mpi4py")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = launch.run(2, args, module=module, timeout=timeout, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def compare(model, batch, classes, steps):
    out = run_two([model, batch, classes, steps], module=str(WORKER))
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ the state, no MPI

def test_model_parallel_split_join_exact_and_inverse():
    state = {n: a.copy() for n, a in get_model("alexnet_small", seed=1).state_dict().items()}
    halves = split_state(state)
    for n, a in state.items():
        assert halves[0][n].shape[0] == halves[1][n].shape[0] == a.shape[0] // 2
        assert halves[0][n].shape[1:] == a.shape[1:]          # input columns: all of them
    joined = join_state(halves)
    assert list(joined) == list(state)
    for n in state:
        assert np.array_equal(joined[n], state[n])
    again = split_state(joined)
    for t in (0, 1):
        for n in state:
            assert np.array_equal(again[t][n], halves[t][n])


def test_model_parallel_split_rows_are_the_groups():
    """The cut along axis 0 is the paper's: a grouped layer's tower-t rows read only input
    group t, a layer without groups reads all columns.  Checked against the one-process
    convolution, not against the cut itself."""
    model = get_model("alexnet_small", seed=2).to("numpy", dtype="float64")
    halves = split_state(model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 32, 7, 7))
    conv2 = model["conv2"]                     # groups=2, 32 -> 64
    whole = functional.conv_forward(x, conv2.params["weight"], conv2.params["bias"], 1, 2, 2)
    for t in (0, 1):
        own = x[:, 16 * t:16 * (t + 1)]
        half = functional.conv_forward(own, halves[t]["conv2.weight"], halves[t]["conv2.bias"],
                                       1, 2, 1)
        assert np.allclose(half, whole[:, 32 * t:32 * (t + 1)], rtol=0, atol=1e-12)
    x3 = np.random.default_rng(1).standard_normal((2, 64, 7, 7))
    conv3 = model["conv3"]                     # no groups: each tower reads all 64 channels
    whole = functional.conv_forward(x3, conv3.params["weight"], conv3.params["bias"], 1, 1, 1)
    for t in (0, 1):
        half = functional.conv_forward(x3, halves[t]["conv3.weight"], halves[t]["conv3.bias"],
                                       1, 1, 1)
        assert np.allclose(half, whole[:, 48 * t:48 * (t + 1)], rtol=0, atol=1e-12)


class _FakeWorld:
    def __init__(self, size, rank=0):
        self.size, self.rank = size, rank


def test_model_parallel_refuses_models_without_towers_and_other_rank_counts():
    with pytest.raises(ConfigError, match="no towers") as err:
        check_towers(get_model("alexnet32"), "alexnet32")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no towers"):
        Towers(get_model("alexnet32"), Peer(_FakeWorld(2)), "alexnet32")
    with pytest.raises(ConfigError, match="exactly 2 processes.*got 3"):
        Peer(_FakeWorld(3))


# ------------------------------------------------------------------ two ranks

def test_model_parallel_small_equals_one_process():
    """alexnet_small, float64, batch 4, dropout on: two steps (forward, loss, backward, SGD
    with momentum and weight decay) and an evaluation forward on 2 ranks against one
    process: logits, loss, the image's gradient, every parameter's gradient, every
    parameter after each update."""
    report = compare("alexnet_small", 4, 10, 2)
    errors = report["errors"]
    names = [n for n, _, _ in get_model("alexnet_small").named_parameters()]
    assert len(names) == 16
    for k in (0, 1):
        for what in ("logits", "loss", "input_grad"):
            assert f"step{k}/{what}" in errors
        for n in names:
            assert f"step{k}/grad/{n}" in errors and f"step{k}/update/{n}" in errors
    assert "eval/logits" in errors
    worst = max(errors, key=errors.get)
    assert errors[worst] <= BOUND, (worst, errors[worst])
    # the bytes each crossing sent per image, against a count from the layers' shapes:
    # float64 = 8 bytes; tower halves of (C, H, W) maps of alexnet_small
    traffic = report["traffic"]
    expected = {"norm1": (2 * 32 * 32 * 8, 2 * 32 * 32 * 8),     # the LRN halo: 2 channels
                "norm2": (2 * 15 * 15 * 8, 2 * 15 * 15 * 8),
                "to_conv3": (32 * 7 * 7 * 8, 32 * 7 * 7 * 8),    # pool2's half, 32 of 64
                "to_fc6": (32 * 3 * 3 * 8, 32 * 3 * 3 * 8),      # pool5's half, flattened
                "to_fc7": (128 * 8, 128 * 8), "to_fc8": (128 * 8, 128 * 8),
                "logits": (5 * 8, 0),                          # no exchange back: see GatherOutput
                "input": (0, 3 * 32 * 32 * 8)}                   # the image's gradient
    assert set(traffic) == set(expected)
    for name, (fwd, bwd) in expected.items():
        assert (traffic[name]["forward"], traffic[name]["backward"]) == (fwd, bwd), name
    # towers_bench's count (from the layers' shapes) is what the ranks really sent
    counted = {n: (f, b) for n, _, f, b in crossings(get_model("alexnet_small"), itemsize=8)}
    assert counted == {n: fb for n, fb in expected.items() if n != "input"}


def test_model_parallel_bench_counts_the_ungrouped_alternative():
    """towers_bench's other column: conv2, conv4, conv5 reading both towers add their
    inputs' halves (alexnet, float32), counted here from the paper's map sizes."""
    model = get_model("alexnet", num_classes=1000)
    towers = {n: f for n, _, f, _ in crossings(model)}
    every = {n: f for n, _, f, _ in crossings(model, every_layer=True)}
    assert set(every) - set(towers) == {"to_conv2", "to_conv4", "to_conv5"}
    assert every["to_conv2"] == 48 * 27 * 27 * 4            # pool1's half: 48 of 96 maps, 27x27
    assert every["to_conv4"] == every["to_conv5"] == 192 * 13 * 13 * 4
    assert towers["to_conv3"] == 128 * 13 * 13 * 4 and towers["to_fc6"] == 128 * 6 * 6 * 4
    assert towers["to_fc7"] == towers["to_fc8"] == 2048 * 4 and towers["logits"] == 500 * 4


def test_model_parallel_alexnet_forward_backward():
    """The paper's alexnet at batch 2, float64: one step on 2 ranks against one process."""
    errors = compare("alexnet", 2, 1000, 1)["errors"]
    assert "step0/grad/fc6.weight" in errors and "step0/input_grad" in errors
    worst = max(errors, key=errors.get)
    assert errors[worst] <= BOUND, (worst, errors[worst])


# ------------------------------------------------------------------ training from the command line

RUN = ["--limit", "200", "--batch-size", "50", "--no-progress"]
F32 = 1e-4      # float32: the towers sum fc6-fc8's and conv3's inputs in another order, and
                # Adam divides by sqrt(v), so rounding grows over the steps (measured 1.5e-5)


def train_alone(*args):
    done = subprocess.run([sys.executable, "-m", "tinyalexnet", "train", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def same_checkpoint(a, b, bound=F32):
    """Every weight and optimizer array of checkpoints a and b within ``bound`` of b's largest
    magnitude, and the same counters and recorded losses."""
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            if key == "meta":
                continue
            scale = max(float(np.abs(y[key]).max()), 1e-30)
            assert float(np.abs(x[key] - y[key]).max()) <= bound * scale, key
        mx, my = json.loads(str(x["meta"])), json.loads(str(y["meta"]))
    for key in ("epoch", "step", "global_step", "extra_state", "model", "num_classes"):
        assert mx.get(key) == my.get(key), key
    assert mx["optimizer"]["steps"] == my["optimizer"]["steps"] > 0
    for rx, ry in zip(mx["history"], my["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_top1_error"):
            assert abs(rx[key] - ry[key]) <= 1e-4 * max(1.0, abs(ry[key])), key


def test_model_parallel_cli_training_equals_one_process_and_resumes_either_way(tmp_path):
    """`train --model-parallel 2` on 2 ranks writes the checkpoint the one-process run writes
    (float32: the command trains in float32, so to float32 rounding, not 1e-10); a two-tower
    checkpoint resumes in one process, a one-process checkpoint on two towers, and both
    continue the one-process run; the two-tower checkpoint evaluates in one process."""
    one = tmp_path / "one"
    train_alone("--epochs", "2", "--out", one, *RUN)
    towers = tmp_path / "towers"
    out = run_two(["train", "--model-parallel", "2", "--epochs", "1",
                   "--out", towers, *RUN])
    assert "two towers on 2 processes" in out and out.count("epoch 1/1") == 1   # rank 0 speaks
    train_alone("--resume", towers, "--epochs", "2")              # 2 ranks -> 1 process
    same_checkpoint(towers / "last.npz", one / "last.npz")
    back = tmp_path / "back"
    train_alone("--epochs", "1", "--out", back, *RUN)
    run_two(["train", "--model-parallel", "2", "--resume", back,
             "--epochs", "2"])                                    # 1 process -> 2 ranks
    same_checkpoint(back / "last.npz", one / "last.npz")
    done = subprocess.run([sys.executable, "-m", "tinyalexnet", "evaluate",
                           str(back / "last.npz"), "--limit", "50", "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "accuracy" in done.stdout, done.stderr


@pytest.mark.parametrize("args, message", [
    (["--model-parallel", "3"], "towers are 2"),
    (["--model-parallel", "2", "--data-parallel"], "choose one"),
    (["--model-parallel", "2"], "exactly 2 processes.*got 1"),
])
def test_model_parallel_cli_refusals(tmp_path, args, message):
    pytest.importorskip("mpi4py")
    done = subprocess.run([sys.executable, "-m", "tinyalexnet", "train", *args, "--out",
                           str(tmp_path / "r"), *RUN], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "r" / "last.npz").exists()


def test_model_parallel_bench_runs_and_its_bytes_match(capsys):
    """towers_bench end to end at the smallest size (its numbers are not checked: speed lives
    in the command's output): both timings run, and the bytes rank 0 really sent equal the
    count printed above them (the command warns otherwise)."""
    from tinyalexnet.parallel import towers_bench
    pytest.importorskip("mpi4py")
    towers_bench.main(["--model", "alexnet_small", "--batch-size", "2", "--steps", "1",
                       "--rounds", "1"])
    out = capsys.readouterr().out
    assert "one process, 2 BLAS threads" in out and "two towers, 2 ranks x 1 thread" in out
    assert "bytes rank 0 sent per image (measured): 36,900" in out
    assert "warning" not in out


# ------------------------------------------------------------------ failures, for real

TOWERS_RUN = ["--model-parallel", "2"]


def test_model_parallel_a_hung_tower_is_named_within_the_timeout(tmp_path):
    """Rank 1 stopped (alive, silent): rank 0, waiting in a crossing, gives up after
    --rank-timeout with one line naming rank 1, and the job ends."""
    proc, out, log = mpi_runs.start(tmp_path, "hang", TOWERS_RUN, timeout="5")
    text, seconds = mpi_runs.hang_rank_1(proc, out, log)
    assert proc.returncode != 0
    assert seconds < 40
    assert "error: rank 0 of 2: no answer from rank 1 within 5 s" in text, text


def test_model_parallel_sigterm_to_one_tower_stops_both_with_one_whole_checkpoint(tmp_path):
    """SIGTERM to rank 1 only: both towers stop after the same step, rank 0 says so once and
    writes one checkpoint of the whole model, which resumes in one process."""
    proc, out, log = mpi_runs.start(tmp_path, "term", TOWERS_RUN)
    os.kill(mpi_runs.rank_pid(out, 1), signal.SIGTERM)
    text = mpi_runs.finish(proc, log)
    stops = [line for line in text.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stops) == 1, text
    assert "no answer" not in text
    with np.load(out / "last.npz", allow_pickle=False) as ck:
        assert ck["model/fc6.weight"].shape == (256, 576)          # whole, not a tower's half
        meta = json.loads(str(ck["meta"]))
    assert meta["epoch"] == 0 and 0 < meta["step"] < 375
    assert f"step {meta['step']}/375" in stops[0]
    resumed = train_alone("--resume", out, "--epochs", "1")
    assert "resuming" in resumed
