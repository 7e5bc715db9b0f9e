"""A run folder's files are never overwritten by a run they do not belong to.

A new run into a folder an earlier run wrote to is refused, even without its
last.npz; a resume that repairs best.npz after a crash keeps a best.npz of
another run or another model aside instead of overwriting it.  Checked on the
files' bytes.
"""
import hashlib
import os

import numpy as np
import pytest

from cli_refusals import user_error
from tinyalexnet import checkpoint
from tinyalexnet.config import make_config
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.errors import TinyAlexNetError
from tinyalexnet.cli import main
from tinyalexnet.models import get_model
from tinyalexnet.resume import RUN_FILES
from tinyalexnet.stopping import Interrupted
from tinyalexnet.train import Trainer

QUICK = ["--limit", "100", "--batch-size", "50", "--no-progress"]


def stripes(n, seed, classes=4):
    """Grey 28x28 images whose class is the row of a bright stripe."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 80, (n, 1, 28, 28))
    for k in range(4):
        images[np.arange(n), 0, 3 + 5 * labels + k, 4:24] += 150
    return ArrayDataset(images.astype(np.uint8), labels, [f"class{k}" for k in range(classes)],
                        name="stripes")


@pytest.fixture(scope="module")
def data():
    return stripes(64, 0), stripes(32, 1), stripes(32, 2)       # 2 steps an epoch


def trainer(data, out, on_step=None, **options):
    options = dict(dict(epochs=1, batch_size=32, eval_batch_size=64), **options)
    return Trainer(make_config(**options), out, datasets=data, progress=False, log=None,
                   on_step=on_step)


def snapshot(folder):
    """{file name: SHA-256} of every file in ``folder`` but the lock."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder)) if name != "owner.lock"}


# ----------------------------------------------------------------------------- new runs

def test_the_run_files_are_what_a_train_command_writes(tmp_path, capsys):
    """A new run is refused where any of RUN_FILES is: they must be all a run leaves."""
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), *QUICK]) == 0
    capsys.readouterr()
    assert set(os.listdir(tmp_path / "run")) - {"owner.lock"} == set(RUN_FILES)


def test_a_new_run_refuses_a_folder_with_an_earlier_runs_files(tmp_path, capsys):
    """best.npz, the history and test.json but no last.npz: a new run overwrote them all
    without a word."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.npz", "history.json", "history.csv", "test.json", "notes.txt"):
        (run / name).write_text(f"an earlier run's {name}")
    before = snapshot(run)
    out, line = user_error(["train", "--out", str(run), *QUICK], capsys, str(run),
                           "best.npz, history.json, history.csv, test.json", "no last.npz",
                           "give another --out", "move those files away")
    assert "notes.txt" not in line                       # not a file a run writes
    assert "epoch" not in out
    assert snapshot(run) == before


def test_a_branch_into_a_folder_with_an_earlier_runs_files_is_refused(data, tmp_path):
    """--resume CHECKPOINT --out OTHER refused only an OTHER with last.npz in it."""
    trainer(data, tmp_path / "run").fit()
    other = tmp_path / "other"
    other.mkdir()
    (other / "history.json").write_text("[]")
    before = snapshot(other)
    source = tmp_path / "run" / "last.npz"
    with pytest.raises(TinyAlexNetError) as info:
        Trainer.resume(source, overrides={"epochs": 2}, out_dir=other, datasets=data,
                       progress=False, log=None)
    message = str(info.value)
    assert str(other) in message and "history.json" in message and "\n" not in message
    assert f"give --out a new folder to start a run from {source}" in message
    assert snapshot(other) == before


# ----------------------------------------------------------------------------- repairs

@pytest.fixture(scope="module")
def foreign_best(data, tmp_path_factory):
    """best.npz files that are not the resumed run's: another run's, another model's."""
    folder = tmp_path_factory.mktemp("foreign")
    trainer(data, folder / "another run", seed=1).fit()
    model = get_model("alexnet32", num_classes=4, in_channels=1)
    weights = checkpoint.save(folder / "weights.npz", model,
                              checkpoint.model_meta(model, "alexnet32"))
    return {"another run": folder / "another run" / "best.npz", "another model": weights}


@pytest.mark.parametrize("whose", ["another run", "another model"])
def test_repair_keeps_a_best_npz_that_is_not_this_runs_aside(data, tmp_path, foreign_best, whose):
    """last.npz says best.npz holds epoch 1; someone put another best.npz there.  The
    repair on resume wrote over it; now it is renamed, and the log says so."""
    run = tmp_path / "run"
    trainer(data, run).fit()
    theirs = foreign_best[whose].read_bytes()
    (run / "best.npz").write_bytes(theirs)
    lines = []
    Trainer.resume(run, datasets=data, progress=False, log=lines.append).close()
    assert (run / "best.other-1.npz").read_bytes() == theirs
    best, last = checkpoint.read_meta(run / "best.npz"), checkpoint.read_meta(run / "last.npz")
    assert (best["run_id"], best["epoch"]) == (last["run_id"], 1)        # repaired: ours
    said = [line for line in lines if "aside" in line]
    assert len(said) == 1 and str(run / "best.npz") in said[0]
    assert str(run / "best.other-1.npz") in said[0]
    assert ("alexnet32" in said[0]) == (whose == "another model")


def test_repair_brings_this_runs_own_older_best_up_to_date(data, tmp_path):
    """best.npz holds this run, only an older state of it (as a crash between the writes
    leaves it): it is replaced, nothing is kept aside."""
    run = tmp_path / "run"

    def ctrl_c_after_one_step(tr):
        if tr.state.global_step == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        trainer(data, run, on_step=ctrl_c_after_one_step).fit()
    older = (run / "last.npz").read_bytes()                 # this run, at epoch 1, step 1
    Trainer.resume(run, datasets=data, progress=False, log=None).fit()
    (run / "best.npz").write_bytes(older)
    lines = []
    Trainer.resume(run, datasets=data, progress=False, log=lines.append).close()
    assert sorted(os.listdir(run)) == ["best.npz", "history.csv", "history.json",
                                       "history.png", "last.npz", "owner.lock"]
    best = checkpoint.read_meta(run / "best.npz")
    assert (best["epoch"], best["step"]) == (1, 0)
    assert [line for line in lines if "repaired" in line and "aside" not in line]
