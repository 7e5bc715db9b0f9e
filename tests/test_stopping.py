"""What a stopped run says: each message names what is on disk and a next step that works.

Each test stops a run at an awkward moment (the first save fails, a Ctrl-C
while an epoch's files are written, the run folder moved away, SIGTERM during
the final test) and checks the one line against what is really on disk.
"""
import errno
import json
import os
import signal

import numpy as np
import pytest

from cli_refusals import one_line_error
from tinyalexnet import checkpoint, signals
from tinyalexnet import train as train_module
from tinyalexnet.cli import main
from tinyalexnet.config import make_config
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.errors import RunFolderError
from tinyalexnet.stopping import Interrupted
from tinyalexnet.train import Trainer

QUICK = ["--limit", "100", "--batch-size", "50", "--no-progress"]     # 2 steps an epoch


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


def trainer(data, out, on_epoch=None, **options):
    options = dict(dict(epochs=2, batch_size=32, eval_batch_size=64), **options)
    return Trainer(make_config(**options), out, datasets=data, progress=False, log=None,
                   on_epoch=on_epoch)


def cli(args, capsys):
    """main(args) -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def full_disk(when):
    """An np.savez that finds the disk full when ``when(meta, file name)`` holds."""
    real_savez = np.savez

    def savez(f, **arrays):
        if when(json.loads(str(arrays["meta"])), os.path.basename(f.name)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(f, **arrays)
    return savez


def test_a_full_disk_at_the_first_save_offers_no_resume(tmp_path, monkeypatch, capsys):
    """The first checkpoint cannot be written: nothing can be resumed, so the line must
    not offer --resume (it did: 'continue with: ... --resume RUN', which then fails)."""
    run = tmp_path / "run"
    monkeypatch.setattr(np, "savez", full_disk(lambda meta, name: True))
    code, _, err = cli(["train", "--epochs", "2", "--out", run, *QUICK], capsys)
    line = one_line_error(code, err, "No space left on device", "free some space",
                          "start the run again", "no checkpoint was saved")
    assert "--resume" not in line
    assert not (run / "last.npz").exists()


def improving_evaluate(*args, **kwargs):
    """Every epoch a better validation error, so every epoch writes best.npz."""
    improving_evaluate.calls += 1
    error = 0.5 / improving_evaluate.calls
    return {"loss": error, "top1_error": error, "top5_error": 0.0, "accuracy": 1 - error,
            "count": 32, "confusion": np.zeros((4, 4), int)}


@pytest.mark.parametrize("file, kept, next_step", [
    ("last.npz", "(after epoch 2) is kept", "continue with: python -m tinyalexnet train --resume"),
    ("best.npz", "(after epoch 3) is kept", "all 3 epochs are done; test it with: "
                                            "python -m tinyalexnet evaluate")])
def test_a_stop_while_an_epoch_is_saved_names_that_epoch(data, tmp_path, monkeypatch, file, kept,
                                                         next_step):
    """A second Ctrl-C while the last epoch of a 3-epoch run writes its checkpoints.  It
    was 'during an update at epoch 4, step 0/2': an epoch the run does not have."""
    improving_evaluate.calls = 0
    monkeypatch.setattr(train_module, "evaluate", improving_evaluate)
    real_savez = np.savez

    def savez(f, **arrays):
        if json.loads(str(arrays["meta"]))["epoch"] == 3 and file in os.path.basename(f.name):
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    t = trainer(data, tmp_path, epochs=3)
    with pytest.raises(Interrupted) as info:
        t.fit()
    message = str(info.value)
    assert "while the end of epoch 3 was being saved" in message and "\n" not in message
    assert "epoch 4" not in message
    assert f"the last checkpoint {tmp_path / 'last.npz'} {kept}" in message
    assert next_step in message
    assert info.value.checkpoint == str(tmp_path / "last.npz")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds a moved folder via /proc")
def test_a_run_folder_moved_while_training_is_named_where_it_went(data, tmp_path):
    """The folder is renamed after epoch 1; epoch 2's save fails.  The line said 'no
    checkpoint was saved' and offered --resume of the old name; epoch 1's is in the new one."""
    run, moved = tmp_path / "run", tmp_path / "moved"

    def move_after_epoch_one(tr, record):
        if record["epoch"] == 1:
            os.rename(run, moved)

    t = trainer(data, run, on_epoch=move_after_epoch_one)
    with pytest.raises(RunFolderError) as info:
        t.fit()
    message = str(info.value)
    assert "no checkpoint" not in message and "\n" not in message
    assert f"moved to {moved}" in message
    assert f"the last checkpoint {moved / 'last.npz'} (after epoch 1) is kept" in message
    assert message.endswith(f"continue with: python -m tinyalexnet train --resume {moved}")
    resumed = Trainer.resume(moved, datasets=data, progress=False, log=None)
    resumed.fit()
    assert checkpoint.read_meta(moved / "last.npz")["epoch"] == 2


def test_sigterm_during_the_final_test_says_the_run_is_saved(tmp_path, monkeypatch, capsys):
    """SIGTERM after training, while the train command tests: it said a bare 'terminated'."""
    run = tmp_path / "run"

    def terminated(self, dataset=None, ten_crop=False):
        raise signals.Terminated

    monkeypatch.setattr(Trainer, "evaluate", terminated)
    code, _, err = cli(["train", "--epochs", "1", "--out", run, *QUICK], capsys)
    assert code == 143, err
    line = err.strip()
    assert "\n" not in line and "final test" in line and "stopped by SIGTERM" in line
    assert f"saved in {run / 'last.npz'}" in line
    assert line.endswith(f"python -m tinyalexnet evaluate {run / 'last.npz'}")
    assert checkpoint.read_meta(run / "last.npz")["epoch"] == 1
    assert not (run / "test.json").exists()


def test_a_signal_during_the_last_epochs_end_stops_after_saving(data, tmp_path):
    """Ctrl-C while the last epoch validates: the run is saved and says it is complete
    (the request used to be dropped, and a command went on to its final test)."""
    def ctrl_c(tr, record):
        if record["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)

    t = trainer(data, tmp_path, on_epoch=ctrl_c)
    with pytest.raises(Interrupted) as info:
        t.fit()
    message = str(info.value)
    assert message.startswith("interrupted after epoch 2: saved ")
    assert message.endswith(f"all 2 epochs are done; test it with: python -m tinyalexnet "
                            f"evaluate {tmp_path / 'last.npz'}")
    assert checkpoint.read_meta(tmp_path / "last.npz")["epoch"] == 2


@pytest.mark.parametrize("fraction, counts, fix", [
    ("0.999", "0 training and 100 validation", "lower --val-fraction (now 0.999) or raise --limit"),
    ("0.001", "100 training and 0 validation", "raise --val-fraction (now 0.001) or --limit")])
def test_a_split_with_an_empty_side_says_which_way_to_move(tmp_path, capsys, fraction, counts,
                                                          fix):
    """--val-fraction 0.999 holds out every image; the line said to raise --val-fraction."""
    code, out, err = cli(["train", "--val-fraction", fraction, "--out", tmp_path / "run",
                          *QUICK], capsys)
    one_line_error(code, err, counts, fix)
    assert "epoch" not in out
