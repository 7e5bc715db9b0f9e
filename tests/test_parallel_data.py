"""Data parallelism (DataParallel) on 2 processes (mpiexec, CPU) against one process.

Each end-to-end test starts ``mpiexec -n 2`` (parallel/launch.py) and compares
with the same run in one plain process: the same weights after an epoch (to
1e-10 in float64), the same run continued on another number of processes, the
same evaluation counts.  Failures are provoked for real: a rank killed, a rank
stopped (it hangs), SIGTERM to one rank.  The NCCL engine cannot run here: its
calls are checked against a stand-in.  Tests that need mpiexec are skipped where
mpi4py or mpiexec is missing (`pip install -e ".[mpi]"`).
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import mpi_runs
from tinyalexnet import checkpoint
from tinyalexnet.errors import TinyAlexNetError
from tinyalexnet.models import get_model
from tinyalexnet.parallel import allreduce, data, launch, mpi, speed
from tinyalexnet.parallel.mpi import RankTimeout, World
from tinyalexnet.runfolder import RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "parallel_worker.py")


def have_mpi():
    try:
        import mpi4py  # noqa: F401
        launch.mpiexec()
    except (ImportError, mpi.ParallelError):
        return False
    return True


needs_mpi = pytest.mark.skipif(not have_mpi(), reason='needs mpi4py and mpiexec: pip install '
                                                      '-e ".[mpi]"')


def plain(args, module="tinyalexnet", timeout=300):
    """The same command in one ordinary process (no mpiexec)."""
    program = [module] if module.endswith(".py") else ["-m", module]
    return subprocess.run([sys.executable, *program, *map(str, args)], cwd=ROOT, timeout=timeout,
                          env=launch.environment(1), capture_output=True, text=True)


def two(args, module="tinyalexnet", timeout=300):
    return launch.run(2, args, module, cwd=ROOT, timeout=timeout)


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


# ----------------------------------------------------------------------------- the split

def test_parts_cover_the_batch_in_order():
    for total in (16, 7, 5, 64):
        for size in (1, 2, 3, 4):
            parts = [data.part(total, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))     # no gap, no overlap
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def test_a_batch_that_does_not_split_is_refused_in_one_line():
    with pytest.raises(TinyAlexNetError, match=r"--batch-size 7 does not split evenly over 2 "
                                               r"processes: give a multiple of 2 \(e.g. 6 or 8\)"):
        data.check_split(7, 100, 2)
    with pytest.raises(TinyAlexNetError, match="last batch holds 1 image .* fewer than the 3"):
        data.check_split(6, 13, 3)
    data.check_split(6, 15, 3)          # a last batch of 3: one image each
    data.check_split(8, 20, 2)


# ----------------------------------------------------------------------------- World, alone

def test_without_mpi4py_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)        # import mpi4py fails
    with pytest.raises(mpi.ParallelError, match=r'need mpi4py .*: pip install -e "\.\[mpi\]"'):
        mpi.world()


@needs_mpi
def test_started_alone_a_world_is_one_rank_and_its_collectives_are_identities():
    world = mpi.world(timeout=5)
    assert (world.rank, world.size) == (0, 1)
    buf = np.arange(4.0)
    assert list(world.exchange("x", note=15, buf=buf)) == [15] and list(buf) == [0, 1, 2, 3]
    assert world.broadcast_text("héllo", "y") == "héllo"



class Request:
    """A stand-in MPI request, complete after ``after`` tests (never if None)."""

    def __init__(self, after=0):
        self.after = after

    def Test(self):
        if self.after is None:
            return False
        self.after -= 1
        return self.after < 0


class Comm:
    """A stand-in communicator of ``size`` ranks where ``silent`` ranks never send."""

    def __init__(self, rank, size, silent=()):
        self.rank, self.size, self.silent = rank, size, set(silent)

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Irecv(self, buf, source, tag):
        return Request(None if source in self.silent else 1)

    def Isend(self, buf, dest, tag):
        return Request(0)

    def Iallreduce(self, sendbuf, buf, op):
        return Request(None if self.silent else 0)


@needs_mpi
def test_a_silent_rank_is_named_within_the_timeout():
    world = World(Comm(0, 4, silent={2, 3}), timeout=0.3)
    start = time.monotonic()
    with pytest.raises(RankTimeout, match=r"^rank 0 of 4: no answer from ranks 2, 3 within "
                                          r"0.3 s \(the gradient all-reduce\)") as err:
        world.exchange("the gradient all-reduce", buf=np.zeros(3))
    assert err.value.missing == [2, 3]
    assert time.monotonic() - start < 5


# ----------------------------------------------------------------------------- NCCL, stand-in

class FakeNccl:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0

    def __init__(self):
        self.calls = []

    def get_unique_id(self):
        self.calls.append("get_unique_id")
        return (1, -2, 3)

    def NcclCommunicator(self, size, uid, rank):
        self.calls.append(("NcclCommunicator", size, uid, rank))
        return self

    def allReduce(self, send, recv, count, dtype, op, stream):
        self.calls.append(("allReduce", send, recv, count, dtype, op, stream))


class FakeWorld:
    rank, size = 0, 2

    def __init__(self):
        self.calls = []

    def broadcast_text(self, text, what):
        self.calls.append(("broadcast_text", text))
        return text

    def exchange(self, what, note=0, buf=None):
        self.calls.append(("exchange", note, buf is None))
        return np.array([note, 15])


class DeviceArray(np.ndarray):
    """A NumPy array posing as a CuPy one: ``.data.ptr``."""

    @property
    def data(self):
        return type("Memory", (), {"ptr": 4096})()


def test_nccl_engine_calls_in_order_against_a_stand_in():
    """Unmeasured on GPUs (none here): the id broadcast over MPI, one communicator, then per
    step the MPI notes, the scale, and one NCCL sum in place on the current stream."""
    nccl, world = FakeNccl(), FakeWorld()
    engine = allreduce.NcclAllreduce(world, nccl=nccl, stream=lambda: 99)
    assert nccl.calls == ["get_unique_id", ("NcclCommunicator", 2, (1, -2, 3), 0)]
    assert world.calls == [("broadcast_text", "1,-2,3")]
    grads = np.full(5, 2.0, dtype=np.float32).view(DeviceArray)
    notes = engine(grads, 0.5, note=0)
    assert list(notes) == [0, 15]                          # another rank's SIGTERM comes back
    assert world.calls[-1] == ("exchange", 0, True)        # notes only: the sum is NCCL's
    assert nccl.calls[-1] == ("allReduce", 4096, 4096, 5, FakeNccl.NCCL_FLOAT32, 0, 99)
    assert np.all(np.asarray(grads) == 1.0)                # scaled by its share first


def test_the_engine_follows_the_buffer(monkeypatch):
    world = FakeWorld()
    assert isinstance(allreduce.make_allreduce(world, np.zeros(3)), allreduce.HostAllreduce)
    monkeypatch.setattr(allreduce.backend, "backend_of", lambda x: "cupy")
    monkeypatch.setattr(allreduce.backend, "nccl", FakeNccl)
    assert isinstance(allreduce.make_allreduce(world, np.zeros(3)), allreduce.NcclAllreduce)


# ----------------------------------------------------------------------------- 2 ranks = 1

@needs_mpi
@pytest.mark.parametrize("optimizer,dtype,bound", [("adam", "float64", 1e-10),
                                                   ("sgd", "float64", 1e-10),
                                                   ("sgd", "float32", 1e-5)])
def test_two_ranks_take_the_steps_of_one_process(tmp_path, optimizer, dtype, bound):
    """An epoch of 16 + 16 + 7 images (the last split 4 + 3) with random crops, reflections,
    colour noise and dropout: the weights, and the epoch's numbers, as in one process."""
    args = ["--optimizer", optimizer, "--dtype", dtype]
    ok(plain([tmp_path / "one", *args], WORKER))
    ok(two([tmp_path / "two", *args, "--data-parallel"], WORKER))
    one, two_ = (np.load(tmp_path / name / "params.npy") for name in ("one", "two"))
    assert one.dtype == dtype and one.shape == two_.shape
    start = get_model("alexnet_small", num_classes=4, in_channels=3, seed=0)
    start.to(dtype=dtype)
    assert np.abs(one - start.flat_params()).max() > 1e3 * bound   # the steps moved them
    assert np.abs(one - two_).max() <= bound * np.abs(one).max()
    numbers = [json.loads((tmp_path / name / "numbers.json").read_text())
               for name in ("one", "two")]
    for key in ("train_loss", "train_acc", "val_loss", "val_top1_error", "val_top5_error"):
        assert numbers[0][key] == pytest.approx(numbers[1][key], rel=bound, abs=bound)


# ----------------------------------------------------------------------------- runs

QUICK = ["--limit", "120", "--val-fraction", "0", "--batch-size", "16", "--optimizer", "sgd",
         "--lr", "0.01", "--no-progress"]


def weights(folder):
    ck = checkpoint.load(str(folder / "last.npz"))
    return ck, np.concatenate([np.asarray(ck.weights[k]).ravel() for k in sorted(ck.weights)])


@needs_mpi
def test_resume_on_another_number_of_ranks_continues_the_run(tmp_path):
    """Epoch 1 on 2 ranks then epoch 2 on 1, and epoch 1 on 1 then epoch 2 on 2: both end
    where 2 epochs in one process end (float32: to rounding)."""
    ok(plain(["train", "--epochs", "2", "--out", tmp_path / "ref", *QUICK]))
    ok(two(["train", "--data-parallel", "--epochs", "1", "--out", tmp_path / "a", *QUICK]))
    ok(plain(["train", "--resume", tmp_path / "a", "--epochs", "2", "--no-progress"]))
    ok(plain(["train", "--epochs", "1", "--out", tmp_path / "b", *QUICK]))
    ok(two(["train", "--data-parallel", "--resume", tmp_path / "b", "--epochs", "2",
            "--no-progress"]))
    ref_ck, ref = weights(tmp_path / "ref")
    for run in ("a", "b"):
        ck, w = weights(tmp_path / run)
        assert ck["epoch"] == 2 and len(ck["history"]) == 2
        assert np.abs(w - ref).max() <= 1e-5 * np.abs(ref).max(), run
        assert ck["history"][1]["train_loss"] == pytest.approx(
            ref_ck["history"][1]["train_loss"], rel=1e-5)


@needs_mpi
def test_sharded_evaluate_and_predict_count_as_one_process(tmp_path):
    ok(plain(["train", "--epochs", "1", "--out", tmp_path / "run", *QUICK]))
    ck = tmp_path / "run" / "last.npz"
    for extra in ([], ["--ten-crop"]):
        args = ["evaluate", ck, "--limit", "101", "--batch-size", "16", "--plot",
                tmp_path / "c.png", "--no-progress", *extra]
        one = ok(plain(args)).stdout.splitlines()
        many = ok(two([*args, "--data-parallel"])).stdout.splitlines()
        assert "101 images" in one[0] and len(one) == len(many)
        for a, b in zip(one, many):
            if "loss" in a:         # a sum in another order: the loss to rounding
                a, b = a.rsplit("loss", 1)[0], b.rsplit("loss", 1)[0]
            assert a == b
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for k in range(5):
        path = images / f"{k}.png"
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(path)
        paths.append(path)
    args = ["predict", ck, *paths, "--batch-size", "3"]
    one = ok(plain(args)).stdout
    assert one.count("1. ") == 5
    assert ok(two([*args, "--data-parallel"])).stdout == one


@needs_mpi
def test_a_batch_that_does_not_split_is_refused_by_the_command(tmp_path):
    result = two(["train", "--data-parallel", "--epochs", "1", "--out", tmp_path / "r",
                  *QUICK, "--batch-size", "15"])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: --batch-size 15 does not split evenly over 2 processes: give a "
                     "multiple of 2 (e.g. 14 or 16)"]


@needs_mpi
def test_sharded_evaluate_into_a_busy_folder_ends_both_ranks_with_one_line(tmp_path):
    """The plot's folder held by a run in progress: rank 0 alone looks (two ranks probing the
    folder's lock at once saw each other's probe and one of them refused alone, leaving the
    other waiting in the evaluation until --rank-timeout), and the refusal ends both ranks at
    once, said once."""
    ok(plain(["train", "--epochs", "1", "--out", tmp_path / "run", *QUICK]))
    busy = tmp_path / "busy"
    busy.mkdir()
    owner = RunFolder.claim(busy)
    try:
        started = time.monotonic()
        result = two(["evaluate", tmp_path / "run" / "last.npz", "--limit", "40", "--plot",
                      busy / "c.png", "--no-progress", "--data-parallel", "--rank-timeout", "60"])
        seconds = time.monotonic() - started
    finally:
        owner.unlock()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "run in progress" in errors[0] and "Traceback" not in result.stderr
    assert seconds < 50, f"the ranks took {seconds:.0f} s to stop"
    assert not (busy / "c.png").exists()


def test_only_rank_0_looks_whether_the_plot_folder_is_busy(tmp_path, monkeypatch):
    """The look takes the folder's lock for a moment: on two ranks at once, each could see
    the other's look as a run in progress and refuse alone (CI saw rank 1 do it, and rank 0
    wait in the evaluation until --rank-timeout).  Rank 1, in one process here, never looks."""
    ok(plain(["train", "--epochs", "1", "--out", tmp_path / "run", *QUICK]))
    from tinyalexnet import cli

    class Rank1:
        first, world = False, None

        def together(self, what):
            return contextlib.nullcontext()

    def look(folder):
        raise AssertionError("rank 1 looked at the plot's folder")

    monkeypatch.setattr(cli, "start_parallel", lambda args, backend_name="numpy": Rank1())
    monkeypatch.setattr(cli.runfolder, "owner_elsewhere", look)
    assert cli.main(["evaluate", str(tmp_path / "run" / "last.npz"), "--limit", "20",
                     "--no-progress", "--plot", str(tmp_path / "c.png")]) == 0
    assert not (tmp_path / "c.png").exists()                 # rank 0 draws


# ----------------------------------------------------------------------------- failures

@needs_mpi
def test_a_rank_that_hangs_stops_the_run_within_the_timeout_naming_it(tmp_path):
    proc, out, log = mpi_runs.start(tmp_path, "hang", ["--data-parallel"], timeout="5")
    text, seconds = mpi_runs.hang_rank_1(proc, out, log)
    assert proc.returncode != 0
    assert seconds < 40
    assert "error: rank 0 of 2: no answer from rank 1 within 5 s" in text


@needs_mpi
def test_a_killed_rank_ends_the_run_with_a_line_naming_it(tmp_path):
    proc, out, log = mpi_runs.start(tmp_path, "killed", ["--data-parallel"], timeout="5")
    os.kill(mpi_runs.rank_pid(out, 1), signal.SIGKILL)
    started = time.monotonic()
    text = mpi_runs.finish(proc, log, 60)
    assert proc.returncode != 0
    assert time.monotonic() - started < 40
    assert ("rank 1" in text and "signal 9" in text) or "no answer from rank 1" in text, text


@needs_mpi
def test_sigterm_to_one_rank_stops_both_after_the_same_step_with_one_checkpoint(tmp_path):
    proc, out, log = mpi_runs.start(tmp_path, "term", ["--data-parallel"])
    os.kill(mpi_runs.rank_pid(out, 1), signal.SIGTERM)        # rank 1 only
    text = mpi_runs.finish(proc, log, 60)
    stops = [line for line in text.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stops) == 1, text                      # rank 0 speaks for both
    assert "no answer" not in text                    # rank 0 did not wait for rank 1
    assert sorted(os.listdir(out)) == ["last.npz", "owner.lock"] or \
        sorted(os.listdir(out)) == ["last.npz"]
    ck = checkpoint.load(str(out / "last.npz"))
    assert ck["epoch"] == 0 and 0 < ck["step"] < 375
    assert f"step {ck['step']}/375" in stops[0]
    # and the run goes on from there, on one process
    result = ok(plain(["train", "--resume", out, "--epochs", "1", "--no-progress"]))
    assert "resuming" in result.stdout


@needs_mpi
def test_the_benchmark_prints_both_rates_and_the_gradient_size(capsys):
    assert speed.main(["--models", "alexnet_small", "--batch-sizes", "8", "--steps", "1",
                       "--warmup", "0", "--rounds", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[:2] == ["alexnet_small", "8"]
    assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0
    parameters = get_model("alexnet_small", num_classes=10, in_channels=3).num_parameters()
    assert float(row[-1]) == pytest.approx(4 * parameters / 1e6, abs=0.005)    # float32 bytes


def test_on_paper_counts_alexnets_parameters_and_the_ring_bytes(capsys):
    """The counts from the layer shapes by hand (the paper's grouped conv2, conv4, conv5), and
    the ring's 2(N-1)/N: 2 GPUs send the whole gradient, once."""
    fc = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    conv = ((96 * 3 * 11 * 11 + 96) + (256 * 48 * 25 + 256) + (384 * 256 * 9 + 384)
            + (384 * 192 * 9 + 384) + (256 * 192 * 9 + 256))
    assert speed.on_paper() == 0
    out = capsys.readouterr().out
    assert f"{fc + conv:,} parameters, {fc:,} in fc6-fc8" in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["2"])
    assert float(row[1]) == pytest.approx(4 * (fc + conv) / 1e6, abs=0.05)
