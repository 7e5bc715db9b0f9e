"""Training: the loop that turns a randomly initialised AlexNet into a classifier.

One step of stochastic gradient descent, the whole idea::

    images, labels = train_set.get_batch(indices)        # uint8, on the host
    x = pipeline(images, train=True, rng=rng, xp=xp)      # float32, on the device
    loss = loss_fn.forward(model.forward(x), labels)      # mean cross-entropy
    model.backward(loss_fn.backward())                    # fills every layer's grads
    optimizer.step()                                      # w <- w - lr * (something like) dL/dw

``Trainer.fit`` is that step inside two loops (epochs, batches), and
``Trainer._train_step`` is that step as it runs.  Around it, what a real run
needs, each in a file of its own:

    config.py      TrainConfig, the recipes, the checks of every setting
    metrics.py     top-k counts, the running numbers of an epoch, evaluate()
    datasets/      the data; split.py holds out the validation images
    stopping.py    Ctrl-C/SIGTERM, divergence, a full disk, GPU memory: one line each
    checkpoint.py  the .npz checkpoints; resume.py continues a run from one
    history.py     history.json/.csv, one record per epoch
    runfolder.py   the run folder: one owner, every file written whole

Keeping the GPU busy.  A CuPy call only *queues* work on the GPU; the host
runs ahead until it needs a number back (``float(loss)``, ``.item()``,
``as_numpy``), and then it must wait for everything queued so far.  So the loop
keeps its running sums (loss, correct top-1/top-5 counts) *on the device* and
reads them only every ``log_every`` steps and at the end of an epoch; labels go
to the loss as host NumPy arrays (checked there for free); and the per-layer
NaN checks, each a hidden read-back, are switched off on the GPU: a diverged
run shows up instead as a non-finite running loss when it is read.

Exact resumption.  All randomness is a function of the seed and counters:
batch order of (seed, epoch), augmentation of (seed, epoch, step), dropout
masks of (seed, mask counter).  A checkpoint stores the counters, so a run
stopped at any step and resumed on the CPU ends with the same weights, bit for
bit, as one that was never stopped.
"""
import contextlib
import dataclasses
import math
import os
import uuid

from tqdm import tqdm

from . import backend, checkpoint, history, plots
from .backend import numpy as np
from .config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig, check_config, make_config
from .datasets import iterate_batches, load_dataset
from .datasets.prefetch import prefetch
from .datasets.split import limit_dataset, split_validation
from .errors import NonFiniteError, TinyAlexNetError
from .layers import SoftmaxCrossEntropy
from .metrics import LossNotFinite, RunningMeter, evaluate, log_softmax, topk_correct, tqdm_disable
from .models import get_model
from .optim import SGD, Adam, ReduceLROnPlateau, StepLR
from .resume import check_run_meta, resume_run
from .runfolder import RunFolder
from .stopping import Interrupted, RunStops
from .transforms import Pipeline, paper_canvas

# Defined here, and (from config, metrics, datasets.split, stopping) still importable from
# here as they were before those files existed.
__all__ = ["Trainer", "load_data", "dataset_options", "claim_run_folder", "INPUT_SIDE",
           "TrainConfig", "RECIPES", "OPTIMIZERS", "SCHEDULES", "make_config", "check_config",
           "evaluate", "log_softmax", "topk_correct", "RunningMeter", "Interrupted",
           "split_validation", "limit_dataset"]

# --------------------------------------------------------------------- what a run reads

# The side of each model's square input (``model.input_shape[1:]``), known
# before the model is built: image folders are decoded straight to the size
# the model's crops are cut from.
INPUT_SIDE = {"alexnet_small": 32, "alexnet32": 32, "alexnet": 227}


def dataset_options(name, input_side):
    """Loader options for a model of ``input_side``: image folders are read (and stores
    must have been prepared) at the paper's canvas for it (256 for 227, 36 for 32),
    other data sets as stored."""
    return {"size": paper_canvas(input_side)} if name in ("folder", "store") else {}


def load_data(config):
    """(train, validation, test) data sets for ``config``."""
    c = config
    options = dataset_options(c.dataset, INPUT_SIDE[c.model])
    train = load_dataset(c.dataset, "train", data_dir=c.data_dir, download=c.download, **options)
    test = load_dataset(c.dataset, "test", data_dir=c.data_dir, download=c.download, **options)
    train, test = limit_dataset(train, c.limit, c.seed), limit_dataset(test, c.limit, c.seed + 1)
    if c.val_fraction > 0:
        train, val = split_validation(train, c.val_fraction, c.seed)
    else:
        val = test
    return train, val, test


def claim_run_folder(out_dir, config, root="runs"):
    """The RunFolder for a new run: ``out_dir``, or a new ``runs/<model>-<dataset>-<n>``."""
    if out_dir is None:
        return RunFolder.new(root, f"{config.model}-{config.dataset}")
    return RunFolder.claim(out_dir)


def make_optimizer(config, model):
    if config.optimizer == "sgd":
        return SGD(model, lr=config.lr, momentum=config.momentum,
                   weight_decay=config.weight_decay)
    return Adam(model, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config, optimizer):
    """The learning-rate schedule (None: the rate stays as it is)."""
    if config.schedule == "step":
        return StepLR(optimizer, config.step_size, gamma=0.1)
    if config.schedule == "plateau":
        return ReduceLROnPlateau(optimizer, factor=0.1, patience=config.patience,
                                 max_reductions=config.max_reductions)
    return None


def _print(*args):
    print(*args, flush=True)     # lines reach a log file or a pipe as they happen


# --------------------------------------------------------------------- the trainer

class Trainer:
    """Train a model as ``config`` says, writing checkpoints and history to ``out_dir``.

    ``datasets`` = (train, validation, test) and ``pipeline`` may be given
    (tests, notebooks); otherwise they are built from the config.  ``progress``:
    True/False for the progress bars, None to show them on a terminal only.
    ``log`` receives each summary line.  ``on_step(trainer)`` and
    ``on_epoch(trainer, record)`` are called after every step and epoch.

        trainer = Trainer(make_config(epochs=2), "runs/demo")
        history = trainer.fit()
        print(trainer.evaluate(trainer.test_set)["accuracy"])

    The run folder (``out_dir``; None: a new ``runs/<model>-<dataset>-<n>``)
    is claimed when the Trainer is built (see ``runfolder.RunFolder``): no other
    process may write it until ``fit()`` returns, or until the end of a
    ``with trainer:`` block that holds it for longer.
    """

    prefetch = True     # read the next batch in a background thread (datasets/prefetch.py)

    def __init__(self, config, out_dir=None, datasets=None, pipeline=None, progress=None,
                 log=_print, on_step=None, on_epoch=None, _resuming=False, _run_folder=None):
        check_config(config)
        self.config = c = config
        self.progress, self.log = progress, log or (lambda *a, **k: None)
        self.on_step, self.on_epoch = on_step, on_epoch
        # Where the run stands: all of it goes into every checkpoint.
        self.epoch = 0          # epochs completed
        self.step = 0           # steps completed in the current epoch
        self.global_step = 0
        self.history = []       # one record per completed epoch (history.py)
        self.best_error = None  # the lowest validation top-1 error so far
        self.best_epoch = None  # the epoch best.npz holds (recorded in last.npz)
        self.run_id = uuid.uuid4().hex    # tells this run's checkpoints from another's
        self.changes = []       # settings changed on resume (--lr), with the step they began
        self.branched_from = None  # the checkpoint of another run this one started from
        self.partial = None     # running sums of an epoch cut short (from a checkpoint)
        self.meter = None       # the running numbers of the epoch in progress
        self.stops = RunStops(self)    # what ends the run early, and what it says then
        # Claimed first: a folder in use, read-only or impossible fails now, not after an epoch.
        self.run_folder = _run_folder or claim_run_folder(out_dir, config)
        self.out_dir = self.run_folder.path
        self.hold_folder = False    # keep the folder locked after fit() (``with trainer:``)
        try:
            if not _resuming and os.path.exists(self.path("last.npz")):
                raise TinyAlexNetError(f"{self.out_dir} already holds a run (last.npz): resume it "
                                       f"with --resume {self.out_dir}, or give another --out")
            self.xp = backend.get_backend(c.backend)      # fails early, with the reason
            self.train_set, self.val_set, self.test_set = datasets or load_data(c)
            if len(self.train_set) == 0 or len(self.val_set) == 0:
                raise TinyAlexNetError(
                    f"data set {c.dataset!r}: {len(self.train_set)} training and "
                    f"{len(self.val_set)} validation images; need at least one of each "
                    "(raise --limit or --val-fraction)")
            self.classes = list(self.train_set.classes)
            self.model = get_model(c.model, num_classes=len(self.classes),
                                   in_channels=self.train_set.channels, init=c.init, seed=c.seed)
            lighting = c.lighting and self.train_set.channels == 3
            self.pipeline = pipeline or Pipeline.for_dataset(
                self.train_set, self.model.input_shape, augment=c.augment, lighting=lighting)
            self.model.to(c.backend)
            self.loss_fn = SoftmaxCrossEntropy()
            # Per-layer NaN checks read a value back from the device at every layer:
            # free on NumPy, a stall on the GPU (there the running loss is checked).
            checks = backend.check_finite_default(c.backend)
            self.model.set_check_finite(checks)
            self.loss_fn.set_check_finite(checks)
            self.optimizer = make_optimizer(c, self.model)
            self.scheduler = make_scheduler(c, self.optimizer)
        except BaseException:
            if _run_folder is None:      # resume() lets go of its own
                self.run_folder.abandon()
            raise
        # How often the running numbers are read back: every step is free on
        # NumPy; on a GPU each read waits for the queue to drain.
        self.read_every = 1 if self.xp is np else c.log_every
        # CuPy compiles each kernel on its first use (cached on disk after): the first
        # epoch a process trains on a GPU is slower, and its log line says so.
        self.compiling = self.xp is not np

    # ---------------------------------------------------------------- training
    def fit(self):
        """Train until ``config.epochs`` epochs are done; returns the history.

        Raises :class:`Interrupted` after saving on Ctrl-C or SIGTERM, and a
        one-line NonFiniteError (loss diverged), RunFolderError (a checkpoint
        could not be written: disk full, ...) or TinyAlexNetError (GPU out of
        memory) without touching the checkpoints already written.
        """
        c, xp, model = self.config, self.xp, self.model
        self.run_folder.lock()       # again, if an earlier fit() let go of it
        self.log(f"training {c.model!r} ({model.num_parameters():,} parameters) on "
                 f"{c.dataset}: {len(self.train_set):,} training / {len(self.val_set):,} "
                 f"validation images {'x'.join(map(str, model.input_shape))}, "
                 f"{c.optimizer} lr {self.optimizer.lr:g}, batch {c.batch_size}, {c.backend} "
                 f"backend -> {self.out_dir}")
        try:
            with self.stops:
                while self.epoch < c.epochs:
                    self.stops.check()           # a signal during validation or the saves
                    model.train()
                    meter = self.meter = RunningMeter(xp, self.partial)   # partial: resumed
                    self.partial = None
                    batches = prefetch(self.train_set, iterate_batches(    # from self.step on
                        self.train_set, c.batch_size, c.seed, self.epoch, shuffle=True,
                        start=self.step), enabled=self.prefetch)
                    bar = tqdm(total=self.steps_per_epoch, initial=self.step, unit="batch",
                               leave=False, desc=f"epoch {self.epoch + 1}/{c.epochs}",
                               disable=tqdm_disable(self.progress))
                    with contextlib.closing(batches), bar:
                        for step, indices, batch in batches:
                            # the step, just below: pipeline, forward, loss, backward, update
                            self._train_step(step, indices, meter, batch)
                            bar.update(1)
                            if (step + 1) % self.read_every == 0:    # on a GPU: a sync
                                now = meter.read_finite()            # NaN: stop, name the step
                                bar.set_postfix(loss=f"{now['loss']:.4f}", acc=f"{now['acc']:.3f}",
                                                img_s=f"{meter.images_per_second():.0f}",
                                                refresh=False)
                            if self.on_step is not None:
                                self.on_step(self)
                            self.stops.check()           # Ctrl-C: stop between two steps
                    self._end_epoch(meter)
            self.plot_history()
        finally:
            if not self.hold_folder:
                self.run_folder.unlock()
        return self.history

    def _train_step(self, step, indices, meter, batch=None):
        """One step of SGD on the batch ``indices`` (``batch``: its images and labels, if
        already read); the state advances only at the end."""
        c, xp = self.config, self.xp
        self.stops.step_begins(self.model)
        images, labels = batch if batch is not None else self.train_set.get_batch(indices)
        rng = np.random.default_rng([c.seed, self.epoch, step])
        x = self.pipeline(images, train=True, rng=rng, xp=xp)   # one host->device copy
        logits = self.model.forward(x)
        loss = self.loss_fn.forward(logits, labels)           # labels stay on the host
        self.model.backward(self.loss_fn.backward())
        with self.stops.update():        # weights and counters change together
            self.optimizer.step()
            meter.add(loss, logits, xp.asarray(labels), self.global_step)
            self.step, self.global_step = step + 1, self.global_step + 1

    def _end_epoch(self, meter):
        """Validate, record, step the schedule, save: the end of one epoch."""
        c = self.config
        train = meter.read_finite()
        seconds = meter.seconds()
        rate = meter.count / max(seconds, 1e-9)
        val = evaluate(self.model, self.val_set, self.pipeline, c.eval_batch_size,
                       progress=self.progress, desc="validation")
        if not math.isfinite(val["loss"]):
            raise LossNotFinite(self.global_step, "the validation loss became NaN or infinite")
        with self.stops.update():
            record = {"epoch": self.epoch + 1, "train_loss": train["loss"],
                      "train_acc": train["acc"], "val_loss": val["loss"],
                      "val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"],
                      "lr": self.optimizer.lr, "time": round(seconds, 3),
                      "images_per_s": round(rate, 1)}
            self.history.append(record)
            if self.scheduler is not None:
                self.scheduler.step(val["top1_error"])
            is_best = self.best_error is None or val["top1_error"] < self.best_error
            self.epoch, self.step, self.meter = self.epoch + 1, 0, None
            if is_best:
                self.best_error, self.best_epoch = val["top1_error"], self.epoch
            # In this order: last.npz records which epoch best.npz must hold, so a
            # crash between the writes is repaired on resume (resume.repair).
            self.save("last.npz")
            if is_best:
                self.save("best.npz")
        history.write_history(self.out_dir, self.history)
        self.log(f"epoch {record['epoch']}/{c.epochs}  train loss {record['train_loss']:.4f} "
                 f"acc {100 * record['train_acc']:.2f}%  val loss {record['val_loss']:.4f} "
                 f"top-1 err {100 * record['val_top1_error']:.2f}% top-5 err "
                 f"{100 * record['val_top5_error']:.2f}%  lr {record['lr']:.3g}  "
                 f"{seconds:.1f} s  {rate:.0f} img/s" + ("  *best" if is_best else "")
                 + ("  (includes CuPy's kernel compilation)" if self.compiling else ""))
        self.compiling = False
        if self.optimizer.lr < record["lr"]:
            self.log(f"validation error stopped improving: learning rate {record['lr']:.3g} -> "
                     f"{self.optimizer.lr:.3g}")
        if self.on_epoch is not None:
            self.on_epoch(self, record)

    # ---------------------------------------------------------------- testing
    def evaluate(self, dataset=None, ten_crop=False):
        """:func:`metrics.evaluate` of the current model on ``dataset`` (default: the test set)."""
        dataset = self.test_set if dataset is None else dataset
        return evaluate(self.model, dataset, self.pipeline, self.config.eval_batch_size,
                        ten_crop=ten_crop, progress=self.progress, desc="test")

    # ---------------------------------------------------------------- saving
    def path(self, name):
        return os.path.join(self.out_dir, name)

    @property
    def steps_per_epoch(self):
        return -(-len(self.train_set) // self.config.batch_size)

    def state_meta(self, meter=None):
        """Everything but the arrays, for the checkpoint's JSON record."""
        meta = checkpoint.model_meta(self.model, self.config.model)
        # an epoch cut short: its running numbers so far (or those not yet continued)
        partial = meter.state() if meter is not None and meter.count else self.partial
        meta.update(
            epoch=self.epoch, step=self.step, global_step=self.global_step,
            steps_per_epoch=self.steps_per_epoch, classes=self.classes,
            config=dataclasses.asdict(self.config),
            pipeline=self.pipeline.config() if hasattr(self.pipeline, "config") else None,
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            extra_state=self.model.get_extra_state(), history=self.history,
            best_error=self.best_error, best_epoch=self.best_epoch, run_id=self.run_id,
            changes=self.changes, branched_from=self.branched_from, partial=partial)
        return meta

    def save(self, name="last.npz", meter=None):
        """Write a checkpoint of the current state to ``out_dir/name``; returns its path.

        Refuses (NonFiniteError) to write weights or optimizer state that are
        NaN or infinite: that would replace a good checkpoint with a broken one.
        """
        try:
            return checkpoint.save(self.path(name), self.model, self.state_meta(meter),
                                   self.optimizer, finite=True)
        except NonFiniteError as err:
            raise LossNotFinite(self.global_step, f"the weights became NaN or infinite ({err})"
                                ) from None

    def plot_history(self):
        """history.png in ``out_dir``: the curves so far (at the end of ``fit``)."""
        if self.history:
            plots.plot_history(self.history, self.path("history.png"))     # atomic

    # ---------------------------------------------------------------- resuming
    @classmethod
    def resume(cls, path, overrides=None, datasets=None, pipeline=None, out_dir=None, **kwargs):
        """Continue the run saved at ``path`` (a checkpoint or a run folder).

        ``overrides`` may change config fields that do not alter what was
        learned so far: ``epochs`` (to extend the run), ``backend`` (to move
        it to another device), ``data_dir`` (the same classes, elsewhere), and
        ``lr``: the learning rate from here on (e.g. after a divergence),
        recorded in the checkpoint's ``changes`` and in the history's lr
        column.  Everything else comes from the checkpoint.

        The run continues in the checkpoint's own folder, and only from that
        run's newest state: resuming an older checkpoint there (``best.npz``
        while ``last.npz`` went on) would overwrite the newer one, and is
        refused.  ``out_dir`` (another folder) instead starts a new run there
        from the checkpoint, a branch that leaves the old run as it is.  Other
        arguments are as for ``Trainer``.  See resume.py.
        """
        return resume_run(cls, path, overrides, datasets, pipeline, out_dir, **kwargs)

    def load_state(self, ck):
        """Restore weights, optimizer, scheduler, counters and history from a Checkpoint."""
        c = self.config
        data = f"--data-dir {c.data_dir}" if c.data_dir else f"data set {c.dataset!r}"
        checkpoint.check_classes(ck, self.classes, data)
        ck.load_model(self.model, c.model)
        ck.load_optimizer(self.optimizer)
        check_run_meta(ck, self.scheduler)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
        self.global_step = int(ck["global_step"])
        self.history = list(ck.get("history", []))
        self.best_error = ck.get("best_error")
        self.best_epoch = ck.get("best_epoch")
        self.run_id = ck.get("run_id") or self.run_id
        self.changes = list(ck.get("changes") or [])
        self.branched_from = ck.get("branched_from")
        self.partial = ck.get("partial")
        if self.step > self.steps_per_epoch:
            raise TinyAlexNetError(f"{ck.path}: saved at step {self.step} of an epoch that has "
                                   f"only {self.steps_per_epoch} steps: the data set changed")

    def change_lr(self, lr):
        """Train on with learning rate ``lr`` from the current step; the change is recorded."""
        old = self.optimizer.lr
        self.changes.append({"epoch": self.epoch, "step": self.step,
                             "global_step": self.global_step, "lr": [old, lr]})
        self.optimizer.lr = lr
        self.log(f"learning rate {old:g} -> {lr:g} from epoch {self.epoch + 1}, step "
                 f"{self.step} (recorded in the checkpoint and the history's lr column)")

    # ---------------------------------------------------------------- owning the folder
    def close(self):
        """Let go of the run folder (``fit()`` does at its end, unless inside ``with``)."""
        self.hold_folder = False
        self.run_folder.unlock()

    def __enter__(self):
        self.hold_folder = True
        self.run_folder.lock()
        return self

    def __exit__(self, *exc):
        self.close()
        return False
