"""Continuing a saved run: the checks before it goes on, the repairs after a crash.

``Trainer.resume(path)`` calls :func:`resume_run`.  A run continues in its own
folder and only from that run's newest state (resuming ``best.npz`` while
``last.npz`` went on would overwrite the newer state); ``--out NEW`` instead
starts a new run in NEW from the checkpoint (a branch) and leaves the old one
as it is.  Before anything trains, the checkpoint's settings and counters are
checked like settings given by hand, and files an earlier crash left behind
(best.npz, the history) are brought in line with it.

An epoch ends by writing last.npz, then best.npz, then the history files;
last.npz records which epoch best.npz must hold, so a crash between two of
those writes is found here and repaired.
"""
import dataclasses
import os
import shlex
import shutil
import uuid

from . import checkpoint, history
from .config import TrainConfig, check_config, config_from_dict
from .errors import CheckpointError, TinyAlexNetError
from .runfolder import RunFolder, write_atomic
from .transforms import Pipeline


def resume_run(trainer_class, path, overrides=None, datasets=None, pipeline=None, out_dir=None,
               **kwargs):
    """``Trainer.resume``: a trainer of ``trainer_class`` ready to continue the run at
    ``path`` (a checkpoint or a run folder); see ``Trainer.resume`` for the arguments."""
    source = checkpoint.checkpoint_path(path)
    home = os.path.dirname(os.path.abspath(source))
    branch = out_dir is not None and not same_folder(out_dir, home)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    lr = overrides.pop("lr", None)
    # Claim before reading: nobody may write the folder between our check and our run.
    run = RunFolder.claim(out_dir if branch else home)
    try:
        ck = checkpoint.load(source)
        if branch:
            if os.path.exists(os.path.join(run.path, "last.npz")):
                raise TinyAlexNetError(f"{run.path} already holds a run (last.npz): give "
                                       f"--out a new folder to start a run from {ck.path}")
        else:
            check_newest(ck, home)
        config = run_config(ck)
        config = dataclasses.replace(config, **overrides)   # TypeError: not a setting
        check_config(config if lr is None else dataclasses.replace(config, lr=lr))
        if pipeline is None and ck.get("pipeline") is not None:
            pipeline = Pipeline.from_config(ck["pipeline"])
        trainer = trainer_class(config, run.path, datasets=datasets, pipeline=pipeline,
                                _resuming=True, _run_folder=run, **kwargs)
        trainer.load_state(ck)
        if branch:
            start_branch(trainer, ck, home)
        else:
            repair(trainer, ck)
        if lr is not None and lr != trainer.optimizer.lr:
            trainer.change_lr(lr)
    except BaseException:
        run.abandon()
        raise
    return trainer


# --------------------------------------------------------------------- checks

def run_config(ck):
    """The TrainConfig stored in checkpoint ``ck``, checked like one given by hand."""
    config = ck.get("config")
    if config is None or ck.get("epoch") is None:
        raise TinyAlexNetError(f"{ck.path}: holds weights only, not a run to resume")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if not set(config) <= fields:
        raise CheckpointError(f"{ck.path}: the run's settings are not understood (unknown "
                              f"{sorted(set(config) - fields)})")
    config = config_from_dict(config)
    try:
        check_config(config)
    except TinyAlexNetError as err:
        raise CheckpointError(f"{ck.path}: the run's settings are damaged ({err})") from None
    return config


def check_run_meta(ck, scheduler):
    """The training state in ``ck`` (counters, history, scheduler) hangs together."""
    def damaged(what):
        raise CheckpointError(f"{ck.path}: {what} (edited or damaged file)")
    for key in ("epoch", "step", "global_step"):
        if ck.get(key) is None:
            damaged(f"no {key!r} counter")
    records = ck.get("history") or []
    if len(records) != ck["epoch"]:
        damaged(f"{len(records)} history records for {ck['epoch']} epochs")
    for record in records:
        if not set(history.FIELDS) <= set(record):
            damaged(f"a history record lacks {sorted(set(history.FIELDS) - set(record))}")
    partial = ck.get("partial")
    if partial is not None and not (isinstance(partial.get("count"), int)
                                    and partial["count"] >= 0):
        damaged("the partial epoch's image count is not a count")
    if scheduler is not None:
        saved = ck.get("scheduler")
        if saved is None or set(saved) != set(scheduler.state_dict()):
            damaged(f"the {type(scheduler).__name__} state is "
                    f"{sorted(saved) if saved else 'missing'}, expected "
                    f"{sorted(scheduler.state_dict())}")


def check_newest(ck, folder):
    """Refuse to resume ``ck`` in ``folder`` unless it is that folder's newest state."""
    last = os.path.join(folder, "last.npz")
    if not os.path.exists(last) or same_folder(ck.path, last):
        return
    try:
        newest = checkpoint.read_meta(last)
    except CheckpointError as err:
        what = f"{last} cannot be read ({err})"
    else:
        same = (newest.get("run_id"), newest.get("global_step")) == (ck.get("run_id"),
                                                                    ck.get("global_step"))
        if same:
            return                       # the same state (best.npz of the newest epoch)
        if newest.get("run_id") == ck.get("run_id"):
            what = f"the run went on: {last} holds it {state_name(newest)}"
        else:
            what = f"{last} holds another run ({state_name(newest)})"
    raise TinyAlexNetError(
        f"{ck.path} holds the run {state_name(ck.meta)}, but {what}; resuming the older state "
        f"in {folder} would overwrite the newer; continue the newest with --resume "
        f"{shlex.quote(folder)}, or "
        f"start a new run from this checkpoint with --resume {shlex.quote(ck.path)} --out "
        f"NEW_FOLDER")


# --------------------------------------------------------------------- repairs

def repair(trainer, ck):
    """Bring best.npz and the history files in line with the checkpoint resumed from.

    last.npz is written first at the end of an epoch, then best.npz, then the
    history; a crash between them leaves the later ones behind, and this
    catches them up.  Files that already agree are not touched.
    """
    t = trainer
    best = t.path("best.npz")
    if t.best_epoch is not None and not holds_best(best, t.best_epoch, t.best_error):
        if (t.epoch, t.step) == (t.best_epoch, 0):
            copy_atomic(ck.path, best)
            t.log(f"repaired {best}: it now holds epoch {t.best_epoch}, the best so far")
        else:
            t.log(f"warning: {best} does not hold epoch {t.best_epoch}, the best so far "
                  f"(removed or replaced by hand); the next better epoch will be written there")
    history.write_history(t.out_dir, t.history, only_if_changed=True)


def start_branch(trainer, ck, home):
    """A new run in the trainer's folder from ``ck`` of the run in ``home``, which stays."""
    t = trainer
    t.branched_from = {"checkpoint": os.path.abspath(ck.path), "run_id": t.run_id,
                       "epoch": t.epoch, "step": t.step, "global_step": t.global_step}
    t.run_id = uuid.uuid4().hex
    t.log(f"starting a new run in {t.out_dir} from {ck.path} ({state_name(ck.meta)}); "
          f"{home} is left as it is")
    if t.best_epoch is not None:
        best = os.path.join(home, "best.npz")
        if (t.epoch, t.step) == (t.best_epoch, 0):
            copy_atomic(ck.path, t.path("best.npz"))
        elif holds_best(best, t.best_epoch, t.best_error):
            copy_atomic(best, t.path("best.npz"))
        else:
            t.log(f"({best} no longer holds epoch {t.best_epoch}: the best epoch "
                  f"is tracked afresh in {t.out_dir})")
            t.best_epoch = t.best_error = None
    t.save("last.npz")
    history.write_history(t.out_dir, t.history)


# --------------------------------------------------------------------- helpers

def state_name(meta):
    """"after epoch 3" or "at epoch 4, step 17": where a checkpoint's run stood."""
    if not meta.get("step"):
        return f"after epoch {meta.get('epoch')}"
    return f"at epoch {meta.get('epoch', 0) + 1}, step {meta.get('step')}"


def holds_best(path, epoch, error):
    """Whether ``path`` is the checkpoint of ``epoch``'s end with validation error ``error``."""
    try:
        meta = checkpoint.read_meta(path)
    except CheckpointError:
        return False
    return (meta.get("epoch"), meta.get("step"), meta.get("best_error")) == (epoch, 0, error)


def same_folder(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def copy_atomic(source, target):
    with open(source, "rb") as f:
        write_atomic(target, lambda out: shutil.copyfileobj(f, out))
