"""Runs that cannot be lost: one owner per run folder, safe resume, signals, full disks.

Each test plays a user's mistake or an accident (two runs in one folder, a
resume from the wrong file, SIGTERM from a job scheduler, a full disk, a crash
between two writes) and checks what is on disk afterwards.  "Nothing already
saved changes when a command fails" is checked on the files' bytes and
modification times (``snapshot``).  Real signals go to real child processes.
"""
import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinyalexnet import checkpoint, runfolder
from tinyalexnet import train as train_module
from tinyalexnet.cli import main
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.errors import NonFiniteError, RunFolderError
from tinyalexnet.config import make_config
from tinyalexnet.datasets.split import split_validation
from tinyalexnet.train import Trainer

from cli_refusals import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--limit", "100", "--batch-size", "50", "--no-progress"]     # 2 steps an epoch


# ----------------------------------------------------------------------------- helpers

def snapshot(folder):
    """{file name: (SHA-256, mtime in ns)} of everything saved in ``folder``.

    ``owner.lock`` is left out: it is not saved data but a note of who last
    opened the folder, rewritten by every process that claims it; so are the
    temporary files of a write in progress.
    """
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name != runfolder.LOCK_NAME and not name.endswith(".tmp") and os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def cli(args, capsys):
    """main(args) -> (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def child_env(extra_path=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, ROOT, env.get("PYTHONPATH"))
                                        if p)
    return env


def python_m(args, cwd, **kwargs):
    """``python -m tinyalexnet ARGS`` in a real process, run in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "tinyalexnet", *map(str, args)], cwd=cwd,
                          env=child_env(), capture_output=True, text=True, timeout=300, **kwargs)


def start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "tinyalexnet", *map(str, args)], cwd=cwd,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the child ended before printing {prefix!r}: {proc.stderr.read()}")


def weights(path):
    ck = checkpoint.load(path)
    return ck.weights, ck.optim_state


def same_weights(a, b):
    (wa, oa), (wb, ob) = weights(a), weights(b)
    assert list(wa) == list(wb) and list(oa) == list(ob)
    return all(np.array_equal(wa[k], wb[k]) for k in wa) and \
        all(np.array_equal(oa[k], ob[k]) for k in oa)


def stripes(n, seed, classes=4):
    """Grey 28x28 images whose class is the row of a bright stripe (learnable at once)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, 1, 28, 28))
    for k in range(4):
        images[np.arange(n), 0, 3 + 5 * labels + k, 4:24] += 150
    return ArrayDataset(images.astype(np.uint8), labels, [f"class{k}" for k in range(classes)],
                        name="stripes")


@pytest.fixture(scope="module")
def data():
    train, val = split_validation(stripes(160, 0), 0.2, seed=0)   # 128 / 32
    return train, val, stripes(40, 1)


def trainer(data, out, **kw):
    options = dict(epochs=2, batch_size=32, log_every=5, eval_batch_size=64)  # 4 steps an epoch
    hooks = {k: kw.pop(k) for k in ("on_step", "on_epoch") if k in kw}
    options.update(kw)
    return Trainer(make_config(**options), out, datasets=data, progress=False, log=None, **hooks)


# ----------------------------------------------------------------------------- 1: resume

@pytest.fixture(scope="module")
def stale_best(tmp_path_factory):
    """A 2-epoch run whose best.npz is epoch 1 and last.npz epoch 2.

    At lr 1e-9 nothing is learned, so epoch 2's validation error ties epoch
    1's, and a tie is not a new best.
    """
    out = tmp_path_factory.mktemp("stale") / "run"
    result = python_m(["train", "--epochs", "2", "--optimizer", "sgd", "--lr", "1e-9", "--out",
                       out, *QUICK], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert checkpoint.read_meta(out / "best.npz")["epoch"] == 1
    assert checkpoint.read_meta(out / "last.npz")["epoch"] == 2
    return out


def test_resuming_an_older_checkpoint_in_place_is_refused(stale_best, capsys):
    before = snapshot(stale_best)
    code, out, err = cli(["train", "--resume", stale_best / "best.npz", "--epochs", "3"], capsys)
    line = one_line_error(code, err, "best.npz", "after epoch 1", "last.npz", "after epoch 2",
                          "--out")
    assert "would overwrite" in line
    assert snapshot(stale_best) == before


def test_resume_with_out_branches_into_a_new_run(stale_best, tmp_path):
    before = snapshot(stale_best)
    new = tmp_path / "branch"
    # In a child process like the run it branches from: the same BLAS threads, so the
    # same summation order, so epoch 2 can be compared bit for bit.
    result = python_m(["train", "--resume", stale_best / "best.npz", "--out", new,
                       "--epochs", "2", "--no-progress"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "starting a new run in" in out and "is left as it is" in out
    assert snapshot(stale_best) == before                  # the old run is untouched
    meta = checkpoint.read_meta(new / "last.npz")
    assert meta["epoch"] == 2
    assert meta["branched_from"]["checkpoint"] == str(stale_best / "best.npz")
    assert meta["run_id"] != checkpoint.read_meta(stale_best / "last.npz")["run_id"]
    old_history = json.loads((stale_best / "history.json").read_text())
    new_history = json.loads((new / "history.json").read_text())
    assert new_history[0] == old_history[0] and len(new_history) == 2
    # Epoch 2 of the branch, from epoch 1's checkpoint, is the old run's epoch 2 exactly.
    assert same_weights(new / "last.npz", stale_best / "last.npz")


# ----------------------------------------------------------------------------- 2: one owner

def test_two_runs_started_together_get_two_folders(tmp_path):
    procs = [start(["train", "--epochs", "1", *QUICK], cwd=tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert runs == ["alexnet_small-fashion-mnist-subset-1",
                    "alexnet_small-fashion-mnist-subset-2"]
    ids = {checkpoint.read_meta(tmp_path / "runs" / r / "last.npz")["run_id"] for r in runs}
    assert len(ids) == 2
    for r in runs:       # last.npz and best.npz of each folder come from one run
        assert checkpoint.read_meta(tmp_path / "runs" / r / "best.npz")["run_id"] in ids
        assert checkpoint.read_meta(tmp_path / "runs" / r / "best.npz")["run_id"] == \
            checkpoint.read_meta(tmp_path / "runs" / r / "last.npz")["run_id"]


def test_a_run_folder_has_one_writer_and_a_killed_one_does_not_block_it(tmp_path):
    out = tmp_path / "run"
    owner = start(["train", "--epochs", "50", "--out", out, *QUICK], cwd=tmp_path)
    try:
        wait_for_line(owner, "epoch 1/50")                # it is training and holds the folder
        for args in (["train", "--out", out, *QUICK],
                     ["train", "--resume", out, "--epochs", "2", "--no-progress"]):
            result = python_m(args, cwd=tmp_path)
            assert result.returncode == 2, result.stderr
            line = result.stderr.strip()
            assert line.startswith("error: ") and "\n" not in line
            assert f"in use by pid {owner.pid}" in line
        owner.send_signal(signal.SIGKILL)                 # no chance to clean up
        owner.wait(timeout=60)
    finally:
        owner.kill()
        owner.communicate()
    done = checkpoint.read_meta(out / "last.npz")["epoch"]
    result = python_m(["train", "--resume", out, "--epochs", done + 1, "--no-progress"],
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checkpoint.read_meta(out / "last.npz")["epoch"] == done + 1


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    real_savez = np.savez
    rivals = []

    def savez_with_a_rival(f, **arrays):
        real_savez(f, **arrays)
        if not rivals:            # another writer of the same file, while ours is half done
            rivals.append(1)
            checkpoint.atomic_savez(path, {"x": np.ones(3)})

    monkeypatch.setattr(np, "savez", savez_with_a_rival)
    checkpoint.atomic_savez(path, {"x": np.zeros(3)})
    monkeypatch.undo()
    with np.load(path) as z:                 # whole, and from the writer that renamed last
        assert np.array_equal(z["x"], np.zeros(3))
    assert os.listdir(tmp_path) == ["last.npz"]


def test_the_lock_is_held_from_start_to_report_and_given_back(data, tmp_path):
    t = trainer(data, tmp_path / "run", epochs=1)
    with pytest.raises(RunFolderError, match="in use by pid"):
        runfolder.RunFolder.claim(tmp_path / "run")
    t.fit()                                             # fit() gives the folder back
    runfolder.RunFolder.claim(tmp_path / "run").unlock()
    with Trainer.resume(tmp_path / "run", datasets=data, progress=False, log=None) as again:
        again.fit()
        with pytest.raises(RunFolderError, match="in use"):   # still held inside ``with``
            runfolder.RunFolder.claim(tmp_path / "run")
    runfolder.RunFolder.claim(tmp_path / "run").unlock()


CLAIM_IN_A_CHILD = ("import sys\n"
                    "from tinyalexnet.runfolder import RunFolder\n"
                    "from tinyalexnet.errors import RunFolderError\n"
                    "try:\n"
                    "    RunFolder.claim(sys.argv[1])\n"
                    "except RunFolderError as err:\n"
                    "    print(err)\n")


def test_deleting_owner_lock_does_not_let_a_second_writer_in(tmp_path):
    run = tmp_path / "run"
    owner = runfolder.RunFolder.claim(run)
    try:
        os.remove(run / runfolder.LOCK_NAME)             # rm runs/x/owner.lock mid-run
        with pytest.raises(RunFolderError, match="in use by another process"):
            runfolder.RunFolder.claim(run)
        child = subprocess.run([sys.executable, "-c", CLAIM_IN_A_CHILD, str(run)], cwd=ROOT,
                               env=child_env(), capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        assert "in use by another process" in child.stdout, child.stdout
    finally:
        owner.unlock()
    runfolder.RunFolder.claim(run).unlock()              # and free again once let go


@pytest.mark.parametrize("kind", ["symbolic link", "FIFO", "folder"])
def test_an_owner_lock_that_is_not_a_plain_file_is_refused_by_name(tmp_path, capsys, kind):
    run = tmp_path / "run"
    run.mkdir()
    note = run / runfolder.LOCK_NAME
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    if kind == "symbolic link":
        os.symlink(outside, note)
    elif kind == "FIFO":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this system")
        os.mkfifo(note)
    else:
        note.mkdir()
    code, out, err = cli(["train", "--out", run, "--epochs", "1", *QUICK], capsys)
    one_line_error(code, err, str(note), f"is a {kind}", "remove it")
    assert "training" not in out
    assert outside.read_text() == "keep me"              # the link was not followed
    assert sorted(os.listdir(run)) == [runfolder.LOCK_NAME]


# ----------------------------------------------------------------------------- 3: write order

class Crash(BaseException):
    """A crash (power cut, kill -9) just before a file's rename: that file keeps its old self."""


def improving_evaluate(*args, **kwargs):
    """Every epoch a better validation error, so every epoch writes best.npz."""
    improving_evaluate.calls += 1
    error = 0.5 / improving_evaluate.calls
    return {"loss": error, "top1_error": error, "top5_error": 0.0, "accuracy": 1 - error,
            "count": 32, "confusion": np.zeros((4, 4), int)}


@pytest.mark.parametrize("crash_before, epoch", [("best.npz", 1), ("best.npz", 2),
                                                 ("history.json", 2), ("history.csv", 2)])
def test_a_crash_between_the_writes_of_an_epoch_is_repaired_on_resume(data, tmp_path, monkeypatch,
                                                                       crash_before, epoch):
    improving_evaluate.calls = 0
    monkeypatch.setattr(train_module, "evaluate", improving_evaluate)
    real_replace = os.replace
    state = {"epoch": 0}

    def replace_or_crash(src, dst):
        if os.path.basename(dst) == crash_before and state["epoch"] == epoch:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(runfolder.os, "replace", replace_or_crash)
    t = trainer(data, tmp_path, epochs=2,
                on_step=lambda tr: state.update(epoch=tr.epoch + 1))
    with pytest.raises(Crash):
        t.fit()
    monkeypatch.setattr(runfolder.os, "replace", real_replace)
    last = checkpoint.read_meta(tmp_path / "last.npz")
    assert last["epoch"] == epoch and last["best_epoch"] == epoch

    resumed = Trainer.resume(tmp_path, datasets=data, progress=False, log=None)
    best = checkpoint.read_meta(tmp_path / "best.npz")
    assert (best["epoch"], best["step"]) == (epoch, 0)
    assert best["best_error"] == last["best_error"] == pytest.approx(0.5 / epoch)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epoch + 1))
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + epoch
    resumed.close()


# ----------------------------------------------------------------------------- 5: classes

def write_folder(root, classes, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            os.makedirs(root / split / c)
            for k in range(5):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                    root / split / c / f"{k}.png")


def test_other_class_names_are_refused_by_resume_and_evaluate(tmp_path, capsys):
    write_folder(tmp_path / "pets", ["cat", "dog"], 0)
    write_folder(tmp_path / "wild", ["cat", "fox"], 1)
    run = tmp_path / "run"
    code, _, err = cli(["train", "--dataset", "folder", "--data-dir", tmp_path / "pets",
                        "--epochs", "1", "--batch-size", "4", "--out", run, "--no-progress"],
                       capsys)
    assert code == 0, err
    before = snapshot(run)
    code, _, err = cli(["train", "--resume", run, "--data-dir", tmp_path / "wild", "--epochs",
                        "2", "--no-progress"], capsys)
    one_line_error(code, err, "['cat', 'dog']", "['cat', 'fox']", str(tmp_path / "wild"))
    assert snapshot(run) == before
    code, _, err = cli(["evaluate", run, "--dataset", "folder", "--data-dir", tmp_path / "wild",
                        "--no-progress"], capsys)
    one_line_error(code, err, "['cat', 'dog']", "['cat', 'fox']")
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- 7: signals

# 9 steps an epoch: a signal sent when epoch 1 ends lands early in epoch 2.
NINE_STEPS = ["--limit", "200", "--batch-size", "20", "--no-progress"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """The uninterrupted reference: two epochs in one go."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = python_m(["train", "--epochs", "2", "--out", out, *NINE_STEPS], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_say_how_to_resume_and_lose_nothing(two_epochs, tmp_path, signum,
                                                                     code):
    out = tmp_path / "run"
    proc = start(["train", "--epochs", "50", "--out", out, *NINE_STEPS], cwd=tmp_path)
    wait_for_line(proc, "epoch 1/50")         # the first epoch is saved; the second has begun
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "saved" in line and f"--resume {out}" in line
    saved = checkpoint.read_meta(out / "last.npz")
    assert saved["epoch"] == 1             # in epoch 2 (or at its very start)
    result = python_m(["train", "--resume", out, "--epochs", "2", "--no-progress"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert same_weights(out / "last.npz", two_epochs / "last.npz")


def sighup_ignored():
    """Whether this process ignores SIGHUP (run under nohup): its children then do too."""
    return hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


@pytest.mark.skipif(not hasattr(signal, "SIGHUP") or sighup_ignored(),
                    reason="no SIGHUP here, or it is ignored (nohup)")
def test_sighup_from_a_closed_terminal_saves_like_sigterm(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_step = Trainer._train_step

    def step_then_hangup(self, step, *args):
        real_step(self, step, *args)
        if self.state.epoch == 1 and self.state.step == 1:   # the terminal closes in epoch 2
            signal.raise_signal(signal.SIGHUP)

    monkeypatch.setattr(Trainer, "_train_step", step_then_hangup)
    code, out, err = cli(["train", "--epochs", "3", "--out", run, *QUICK], capsys)
    assert code == 129, err                             # 128 + SIGHUP, as a shell reports it
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("stopped by SIGHUP at epoch 2, step 1/2: saved")
    assert f"continue with: python -m tinyalexnet train --resume {run}" in lines[0]
    meta = checkpoint.read_meta(run / "last.npz")
    assert (meta["epoch"], meta["step"]) == (1, 1)     # the step after epoch 1 is kept


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_under_nohup_sighup_stays_ignored():
    """nohup ignores SIGHUP so that a run outlives its terminal: training keeps it so."""
    from tinyalexnet import signals
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.StopRequests(), signals.raise_on_sigterm():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


STOP_AT_IMPORT = textwrap.dedent("""
    # sitecustomize for a test: a real signal to this process when a module is first imported
    import os, signal, sys

    class _StopAt:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ["TINYALEXNET_TEST_STOP_AT"]:
                sys.meta_path.remove(self)
                signal.raise_signal(getattr(signal, os.environ["TINYALEXNET_TEST_SIGNAL"]))
            return None

    sys.meta_path.insert(0, _StopAt())
""")


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_start_up_ends_with_one_line(tmp_path, signame, code):
    if signame == "SIGHUP" and (not hasattr(signal, "SIGHUP") or sighup_ignored()):
        pytest.skip("no SIGHUP here, or it is ignored (nohup)")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STOP_AT_IMPORT)
    env = child_env(str(hook))
    env.update(TINYALEXNET_TEST_STOP_AT="tinyalexnet.train", TINYALEXNET_TEST_SIGNAL=signame)
    result = subprocess.run([sys.executable, "-m", "tinyalexnet", "train", *QUICK], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip() == "interrupted during start-up"
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_while_loading_data_leaves_no_run_folder_behind(tmp_path, monkeypatch, capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_data", interrupted)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["train", *QUICK], capsys)
    assert code == 130 and err.strip() == "interrupted"
    assert os.listdir(tmp_path / "runs") == []           # the folder it claimed is gone again


# ----------------------------------------------------------------------------- 9: litter

def a_dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_dead_writers_are_removed_by_the_next_owner(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    seen = []                       # the name a write in progress has: its writer's pid and host
    runfolder.write_atomic(run / "last.npz", lambda f: seen.extend(os.listdir(run)))
    assert len(seen) == 1 and seen[0].startswith(f".last.npz.{os.getpid()}@")
    dead, host = a_dead_pid(), runfolder.HOST
    files = {
        f".last.npz.{dead}@{host}-0123abcd.tmp": False,       # kill -9 during a save: removed
        f".best.npz.{dead}@{host}-89abcdef.tmp": False,
        f".history.json.{dead}@another-host-0123abcd.tmp": True,  # maybe alive elsewhere
        f".last.npz.{os.getppid()}@{host}-0123abcd.tmp": True,    # a writer still running
        f".last.npz.{dead}-0123abcd.tmp": True,       # says no host: not provably dead
        "notes.tmp": True,                                         # not a temporary of ours
    }
    for name in files:
        (run / name).write_bytes(b"x" * 1000)
    with runfolder.RunFolder.claim(run):
        pass
    left = set(os.listdir(run)) - {runfolder.LOCK_NAME, "last.npz"}
    assert left == {name for name, kept in files.items() if kept}


def test_a_failed_start_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # diverges in its first epoch: nothing is saved, so runs/<name>-1 is not kept
    code, _, err = cli(["train", "--lr", "1e6", "--epochs", "1", *QUICK], capsys)
    one_line_error(code, err, "diverged", "no checkpoint was written")
    assert os.listdir(tmp_path / "runs") == []
    # --out with parents that did not exist: all of them go again
    code, _, err = cli(["train", "--out", "new/deeper/run", "--dataset", "mnist", "--data-dir",
                        "no-such-data", *QUICK], capsys)
    one_line_error(code, err, "MNIST")
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    # a folder that existed is left as it was, its owner.lock included
    (tmp_path / "mine").mkdir()
    code, _, err = cli(["train", "--out", "mine", "--lr", "1e6", "--epochs", "1", *QUICK],
                       capsys)
    assert code == 2 and os.listdir(tmp_path / "mine") == [runfolder.LOCK_NAME]


def test_an_out_path_deeper_than_the_recursion_limit_is_not_a_traceback(tmp_path, monkeypatch,
                                                                         capsys):
    """os.makedirs recurses once per missing folder: --out 2,000 folders deep was a
    RecursionError.  Here the depth is just past Python's limit (each folder costs time)."""
    monkeypatch.chdir(tmp_path)
    depth = sys.getrecursionlimit() + 100
    deep = "/".join(["d"] * depth)
    try:
        # claimed (created, locked, a file written and removed), then the data is missing
        code, _, err = cli(["train", "--out", deep, "--dataset", "mnist", "--data-dir",
                            "no-such-data", *QUICK], capsys)
        one_line_error(code, err, "MNIST")
        assert os.listdir(tmp_path) == []              # and all the folders went again
    finally:
        for k in range(depth, 0, -1):                  # shutil.rmtree would recurse too
            folder = "/".join(["d"] * k)
            if os.path.isdir(folder):
                for name in set(os.listdir(folder)) - {"d"}:
                    os.remove(os.path.join(folder, name))
                os.rmdir(folder)


# ----------------------------------------------------------------------------- 8: mistakes

def test_a_negative_seed_is_one_line(capsys):
    code, _, err = cli(["train", "--seed", "-1", *QUICK], capsys)
    one_line_error(code, err, "--seed", "-1")


def test_out_that_is_a_file_or_under_proc_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    before = snapshot(tmp_path)
    code, out, err = cli(["train", "--out", a_file, *QUICK], capsys)
    one_line_error(code, err, str(a_file), "not a folder")
    assert snapshot(tmp_path) == before and "epoch" not in out
    if os.path.isdir("/proc/self"):
        code, out, err = cli(["train", "--out", "/proc/tinyalexnet-run", *QUICK], capsys)
        one_line_error(code, err, "/proc/tinyalexnet-run")
        assert "epoch" not in out


def read_only_prefix(folder):
    """A command prefix under which ``folder`` is read-only (None: not possible here).

    Without root, chmod does it.  Root writes anywhere, so there the folder is
    bind-mounted read-only in a private mount namespace of the child alone.
    """
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--mount", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && cd "$0" && '
              'exec "$@"',
              str(folder)]
    probe = subprocess.run(prefix + ["sh", "-c", 'touch "$0/probe" 2>/dev/null && echo writable '
                                             '|| echo read-only', str(folder)],
                           capture_output=True, text=True)
    return prefix if probe.stdout.strip() == "read-only" else None


@pytest.mark.parametrize("where", ["default runs/ in a read-only folder", "--out read-only"])
def test_a_read_only_folder_fails_before_training(tmp_path, where):
    folder = tmp_path / "ro"
    (folder / "run").mkdir(parents=True)
    prefix = read_only_prefix(folder)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    args = ["train", "--epochs", "1", *QUICK]
    if where == "--out read-only":
        args += ["--out", folder / "run"]
    result = subprocess.run(prefix + [sys.executable, "-m", "tinyalexnet", *map(str, args)],
                            cwd=folder, env=child_env(), capture_output=True, text=True,
                            timeout=300)
    os.chmod(folder, 0o755)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot "), result.stderr
    assert "training" not in result.stdout              # refused before training, not after
    assert os.listdir(folder) == ["run"] and os.listdir(folder / "run") == []


def fail_when(condition):
    """An np.savez that writes part of the file and then finds the disk full, when
    ``condition(meta)`` holds for the checkpoint being written."""
    real_savez = np.savez

    def savez(f, **arrays):
        meta = json.loads(str(arrays["meta"]))
        if not condition(meta):
            return real_savez(f, **arrays)
        real_savez(f, **{k: arrays[k] for k in list(arrays)[:2]})
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return savez


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    seen = {}

    def epoch_two(meta):
        if meta["epoch"] == 2 and not seen:
            seen["before"] = snapshot(run)     # all that epoch 1 saved
        return meta["epoch"] == 2

    monkeypatch.setattr(np, "savez", fail_when(epoch_two))
    code, out, err = cli(["train", "--epochs", "2", "--out", run, *QUICK], capsys)
    line = one_line_error(code, err, "No space left on device", "last.npz (after epoch 1)",
                          f"--resume {run}")
    assert "cannot write" in line
    after = snapshot(run)
    assert {k: after[k] for k in seen["before"]} == seen["before"]
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
    monkeypatch.undo()
    code, out, err = cli(["train", "--resume", run, "--no-progress"], capsys)   # space again
    assert code == 0, err
    assert checkpoint.read_meta(run / "last.npz")["epoch"] == 2


def test_a_full_disk_at_a_ctrl_c_save_is_one_line_and_keeps_the_last(tmp_path, monkeypatch,
                                                                      capsys):
    run = tmp_path / "run"
    real_step = Trainer._train_step
    seen = {}

    def step_then_ctrl_c(self, step, *args):
        real_step(self, step, *args)
        if self.state.epoch == 1 and self.state.step == 1:
            seen["before"] = snapshot(run)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", step_then_ctrl_c)
    monkeypatch.setattr(np, "savez", fail_when(lambda meta: meta["step"] != 0))
    code, out, err = cli(["train", "--epochs", "3", "--out", run, *QUICK], capsys)
    line = one_line_error(code, err, "interrupted at epoch 2, step 1", "could not be saved",
                          "No space left on device", "last.npz (after epoch 1) is kept")
    assert f"--resume {run}" in line
    after = snapshot(run)
    assert {k: after[k] for k in seen["before"]} == seen["before"]
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a private tmpfs")
def test_a_really_full_disk(tmp_path):
    """A 6 MB tmpfs holds one checkpoint of the small model (4.4 MB), not two."""
    script = ('mount -t tmpfs -o size=6m tmpfs "$0" || exit 99; "$@"; rc=$?; '
              'cp -a "$0/run" "$0.copy"; exit $rc')
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, str(disk), sys.executable,
                             "-m", "tinyalexnet", "train", "--epochs", "2", "--out",
                             str(disk / "run"), *QUICK], cwd=tmp_path, env=child_env(),
                            capture_output=True, text=True, timeout=300)
    if result.returncode == 99 or "unshare failed" in result.stderr:
        pytest.skip("no private tmpfs here (needs mount namespaces)")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    copy = tmp_path / "disk.copy"
    assert checkpoint.read_meta(copy / "last.npz")["epoch"] == 1
    assert not [n for n in os.listdir(copy) if n.endswith(".tmp")]
    resumed = python_m(["train", "--resume", copy, "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.read_meta(copy / "best.npz")["epoch"] in (1, 2)


# ----------------------------------------------------------------------------- 11: messages

def test_the_divergence_advice_is_a_command_that_works(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_step = Trainer._train_step

    def poisoned_step(self, step, *args):
        if self.state.epoch == 1 and step == 1:          # the weights blow up in epoch 2
            self.model["fc8"].params["weight"][...] = np.nan
        real_step(self, step, *args)

    monkeypatch.setattr(Trainer, "_train_step", poisoned_step)
    code, _, err = cli(["train", "--epochs", "2", "--out", run, *QUICK], capsys)
    line = one_line_error(code, err, "diverged", "last checkpoint", "(after epoch 1)")
    assert "good checkpoint" not in line
    command = line.split("lower learning rate: ", 1)[1]
    assert command == f"python -m tinyalexnet train --resume {run} --lr 0.0001"
    monkeypatch.undo()
    code, out, err = cli(shlex.split(command)[3:] + ["--no-progress"], capsys)
    assert code == 0, err
    assert "learning rate 0.001 -> 0.0001 from epoch 2" in out
    meta = checkpoint.read_meta(run / "last.npz")
    assert meta["epoch"] == 2
    assert [h["lr"] for h in meta["history"]] == [0.001, 0.0001]
    assert meta["changes"] == [{"epoch": 1, "step": 0, "global_step": 2, "lr": [0.001, 0.0001]}]
    rows = (run / "history.csv").read_text().splitlines()
    assert [r.split(",")[6] for r in rows[1:]] == ["0.001", "0.0001"]


def test_a_diverged_state_is_never_saved(data, tmp_path):
    trainer(data, tmp_path, epochs=1).fit()
    before = snapshot(tmp_path)
    t = Trainer.resume(tmp_path, overrides={"epochs": 2}, datasets=data, progress=False,
                       log=None)
    # The GPU's way: no per-layer checks, the running loss read only now and then.
    t.model.set_check_finite(False)
    t.loss_fn.set_check_finite(False)
    t.read_every = 100

    def poison_then_ctrl_c(tr):
        if tr.state.step == 1:
            tr.model["fc8"].params["weight"][...] = np.nan
        elif tr.state.step == 3:
            raise KeyboardInterrupt

    t.on_step = poison_then_ctrl_c
    try:
        t.fit()
        stop = None
    except (NonFiniteError, KeyboardInterrupt) as err:   # Interrupted would mean "saved"
        stop = err
    assert isinstance(stop, NonFiniteError), stop
    message = str(stop)
    assert "not saved" in message and "last checkpoint" in message
    assert "(after epoch 1)" in message and "good checkpoint" not in message
    assert snapshot(tmp_path) == before
