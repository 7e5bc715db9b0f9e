"""Continuing a saved run: the checks before it goes on, the repairs after a crash.

``Trainer.resume(path)`` is three steps::

    run = open_run(path, overrides, out_dir)   # claimed, read and checked; nothing written
    trainer = Trainer(run.config, run.folder, state=run.state, ...)   # restored from it
    settle(trainer, run)                        # repairs, or a branch's first files; --lr

A run continues in its own folder and only from that run's newest state
(resuming ``best.npz`` while ``last.npz`` went on would overwrite the newer
state); ``--out NEW`` instead starts a new run in NEW from the checkpoint (a
branch) and leaves the old one as it is.  Before anything trains, the
checkpoint's settings and counters are checked like settings given by hand,
and files an earlier crash left behind (best.npz, the history) are brought in
line with it.

An epoch ends by writing last.npz, then best.npz, then the history files;
last.npz records which epoch best.npz must hold, so a crash between two of
those writes is found here and repaired.  A best.npz that is not this run's
(copied in by hand, from another run or another model) is never overwritten:
it is kept aside as best.other-N.npz, and the log says so.

A new run never starts in a folder where an earlier run left its files
(:func:`check_unused`): it would overwrite them.
"""
import dataclasses
import os
import shlex
import shutil
import uuid

from . import checkpoint, history
from .checkpoint import RunState, state_name
from .config import TrainConfig, check_config, config_from_dict
from .errors import CheckpointError, TinyAlexNetError
from .runfolder import RunFolder, fsync_dir, write_atomic

# The files a run writes into its folder (train.py and the train command).
RUN_FILES = ("last.npz", "best.npz", "history.json", "history.csv", "history.png", "test.json",
             "confusion_matrix.png")


@dataclasses.dataclass
class OpenedRun:
    """A saved run, claimed and checked, ready to continue (what :func:`open_run` gives)."""
    config: TrainConfig          # the checkpoint's settings, with the overrides
    state: RunState              # where it stood
    folder: RunFolder            # claimed: the run's own folder, or the branch's new one
    source: checkpoint.Checkpoint    # the checkpoint read (the trainer restores from it)
    lr: float = None             # the learning rate from here on (None: unchanged)
    branch_of: str = None        # the folder of the run this one branches from


def open_run(path, overrides=None, out_dir=None, claim=RunFolder.claim):
    """Claim the folder, read the checkpoint at ``path`` (a checkpoint or a run folder)
    and check it; see ``Trainer.resume`` for the arguments.  Nothing is written.
    ``claim(path)`` claims the folder (data parallelism: rank 0 claims, the others read)."""
    source = checkpoint.checkpoint_path(path)
    home = os.path.dirname(os.path.abspath(source))
    branch = out_dir is not None and not same_folder(out_dir, home)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    lr = overrides.pop("lr", None)
    # Claim before reading: nobody may write the folder between our check and our run.
    folder = claim(out_dir if branch else home)
    try:
        ck = checkpoint.load(source)
        if branch:
            check_unused(folder.path, ck.path)
        else:
            check_newest(ck, home)
        config = dataclasses.replace(run_config(ck), **overrides)   # TypeError: not a setting
        check_config(config if lr is None else dataclasses.replace(config, lr=lr))
        state = RunState.from_checkpoint(ck)
    except BaseException:
        folder.abandon()
        raise
    return OpenedRun(config, state, folder, ck, lr, home if branch else None)


def settle(trainer, run):
    """What the trainer built from ``run`` does before it trains: repair its own folder
    (:func:`repair`), or start the branch (:func:`start_branch`); then the new learning
    rate, if one was asked for, recorded in the state's ``changes``."""
    if trainer.writes:
        if run.branch_of is None:
            repair(trainer, run.source)
        else:
            start_branch(trainer, run.source, run.branch_of)
    s, old = trainer.state, trainer.optimizer.lr
    if run.lr is not None and run.lr != old:
        s.changes.append({"epoch": s.epoch, "step": s.step, "global_step": s.global_step,
                          "lr": [old, run.lr]})
        trainer.optimizer.lr = run.lr
        trainer.log(f"learning rate {old:g} -> {run.lr:g} from epoch {s.epoch + 1}, step "
                    f"{s.step} (recorded in the checkpoint and the history's lr column)")


# --------------------------------------------------------------------- checks

def check_unused(folder, source=None):
    """Refuse to start a run in ``folder`` where an earlier run left its files (``source``:
    the checkpoint a branch starts from, for the message)."""
    found = [name for name in RUN_FILES if os.path.lexists(os.path.join(folder, name))]
    if not found:
        return
    there = ", ".join(found)
    if "last.npz" in found:
        what = f"{folder} already holds a run ({there})"
        how = f"resume it with --resume {shlex.quote(folder)}, or give another --out"
    else:
        what = (f"{folder} already holds files of an earlier run ({there}) but no last.npz to "
                f"continue from")
        how = "give another --out, or move those files away first"
    if source is not None:
        how = f"give --out a new folder to start a run from {source}"
    raise TinyAlexNetError(f"{what}: {how}")


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
    catches them up.  Files that already agree are not touched; a best.npz of
    another run or model is kept aside first.
    """
    t, s = trainer, trainer.state
    best = t.path("best.npz")
    if s.best_epoch is not None and not holds_best(best, s):
        keep_aside_unless_ours(best, s, checkpoint.model_meta(t.model, t.config.model), t.log)
        if (s.epoch, s.step) == (s.best_epoch, 0):
            copy_atomic(ck.path, best)
            t.log(f"repaired {best}: it now holds epoch {s.best_epoch}, the best so far")
        else:
            t.log(f"warning: {best} does not hold epoch {s.best_epoch}, the best so far "
                  f"(removed or replaced by hand); the next better epoch will be written there")
    history.write_history(t.out_dir, s.history, only_if_changed=True)


def start_branch(trainer, ck, home):
    """A new run in the trainer's folder from ``ck`` of the run in ``home``, which stays."""
    t, s = trainer, trainer.state
    s.branched_from = {"checkpoint": os.path.abspath(ck.path), "run_id": s.run_id,
                       "epoch": s.epoch, "step": s.step, "global_step": s.global_step}
    s.run_id = uuid.uuid4().hex
    t.log(f"starting a new run in {t.out_dir} from {ck.path} ({state_name(ck.meta)}); "
          f"{home} is left as it is")
    best_from = None
    if s.best_epoch is not None:
        if (s.epoch, s.step) == (s.best_epoch, 0):
            best_from = ck.path
        elif holds_best(os.path.join(home, "best.npz"), s, run_id=ck.get("run_id")):
            best_from = os.path.join(home, "best.npz")
        else:
            t.log(f"({os.path.join(home, 'best.npz')} no longer holds epoch {s.best_epoch}: "
                  f"the best epoch is tracked afresh in {t.out_dir})")
            s.best_epoch = s.best_error = None
    t.save("last.npz")                   # first, as at the end of an epoch
    if best_from is not None:
        copy_atomic(best_from, t.path("best.npz"))
    history.write_history(t.out_dir, s.history)


# --------------------------------------------------------------------- helpers

def holds_best(path, state, run_id=None):
    """Whether ``path`` is the checkpoint of the end of ``state.best_epoch``, with its
    validation error, of the run ``run_id`` (default ``state.run_id``; files of earlier
    versions name no run)."""
    try:
        meta = checkpoint.read_meta(path)
    except CheckpointError:
        return False
    return ((meta.get("epoch"), meta.get("step"), meta.get("best_error"))
            == (state.best_epoch, 0, state.best_error)
            and meta.get("run_id") in (None, run_id or state.run_id))


def keep_aside_unless_ours(path, state, model, log):
    """Rename the checkpoint at ``path`` to ``best.other-N.npz`` beside it unless it holds
    this run's weights (``state.run_id``, the ``model`` metadata): it is someone's work."""
    if not os.path.lexists(path):
        return
    try:
        meta = checkpoint.read_meta(path)
        whose = (f"{checkpoint.describe_model(meta)}"
                 + (f" of run {meta['run_id'][:8]}" if meta.get("run_id") else ""))
        if (meta.get("run_id") in (None, state.run_id)
                and all(meta.get(k) == model[k] for k in ("model", "num_classes", "input_shape"))):
            return                       # this run's own, only older: the repair replaces it
    except CheckpointError as err:
        whose = f"no checkpoint this run can read ({err})"
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.lexists(f"{stem}.other-{n}{ext}"):
        n += 1
    aside = f"{stem}.other-{n}{ext}"
    os.rename(path, aside)
    fsync_dir(os.path.dirname(path) or ".")
    log(f"kept {path} aside as {aside}: it held {whose}, not this run's")


def same_folder(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def copy_atomic(source, target):
    with open(source, "rb") as f:
        write_atomic(target, lambda out: shutil.copyfileobj(f, out))
