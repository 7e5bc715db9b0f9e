"""Decoding worker processes end with the command, however it ends: no orphan, no zombie."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from image_sources import photo, save
from tinyalexnet.datasets.workers import DecodePool
from tinyalexnet.errors import DataError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
REPO = Path(__file__).resolve().parents[1]


def session(sid):
    """(pid, state) of every process in session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                found.append((int(entry), fields[0]))
    return found


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 2)):
        for name in ("cat", "dog"):
            for k in range(n):
                save(str(root / split / name / f"{k}.jpg"), photo(rng, 120, 160), quality=90)
    return root


def start_training(photos, tmp_path):
    env = dict(os.environ, TINYALEXNET_DATA_WORKERS="2", OPENBLAS_NUM_THREADS="1")
    argv = [sys.executable, "-m", "tinyalexnet", "train", "--dataset", "folder", "--data-dir",
            str(photos), "--model", "alexnet_small", "--epochs", "100", "--batch-size", "8",
            "--out", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = proc.stdout.readline()                    # printed when the training loop starts
    assert first.startswith("training 'alexnet_small'"), first + proc.communicate()[1]
    assert len(session(proc.pid)) >= 3                # the parent, two workers (and a tracker)
    time.sleep(1.0)
    return proc


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_stopping_training_ends_every_worker(photos, tmp_path, how, code):
    proc = start_training(photos, tmp_path)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)            # a terminal sends it to the whole group
    else:
        proc.send_signal(signal.SIGTERM)              # kill PID: the parent alone
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "--resume" in out + err and "Traceback" not in err
    assert wait_for(lambda: session(proc.pid) == [], 10), session(proc.pid)


def test_kill_9_of_the_parent_takes_the_workers(photos, tmp_path):
    proc = start_training(photos, tmp_path)
    workers = [pid for pid, _ in session(proc.pid) if pid != proc.pid]
    proc.kill()
    proc.wait()                  # not communicate(): orphaned workers would hold its pipes open
    proc.stdout.close()
    proc.stderr.close()
    try:
        assert workers and wait_for(lambda: session(proc.pid) == [], 10), session(proc.pid)
    finally:
        for pid, _ in session(proc.pid):                   # leave nothing behind if it failed
            os.kill(pid, signal.SIGKILL)


def test_pool_errors_and_close(tmp_path):
    with pytest.raises(DataError, match="at least 1 worker"):
        DecodePool(0)
    pool = DecodePool(2)
    assert pool.submit(os.getpid).result() != os.getpid()        # another process
    assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
    pids = list(pool._processes)
    pool.close()
    for pid in pids:                                             # joined: no zombie left
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
