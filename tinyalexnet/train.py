"""Training: the loop that turns a randomly initialised AlexNet into a classifier.

One step of stochastic gradient descent, the whole idea::

    images, labels = train_set.get_batch(indices)        # uint8, on the host
    x = pipeline(images, train=True, rng=rng, xp=xp)      # float32, on the device
    loss = loss_fn.forward(model.forward(x), labels)      # mean cross-entropy
    model.backward(loss_fn.backward())                    # fills every layer's grads
    optimizer.step()                                      # w <- w - lr * (something like) dL/dw

``Trainer.fit`` is a loop over epochs, ``_train_epoch`` a loop over one
epoch's batches, and ``_train_step`` one step: the device's work
(``_device_step``: those lines and the running sums) inside the host's
bookkeeping (the counters, what a stop needs to know).  ``_end_epoch``
validates, records and saves.  Around them, what a real run needs, each in a
file of its own:

    config.py      TrainConfig and the recipes; settings.py the range of every number
    metrics.py     top-k counts, the running numbers of an epoch, evaluate()
    datasets/      the data; split.py holds out the validation images
    stopping.py    Ctrl-C/SIGTERM, divergence, a full disk, GPU memory: one line each
    checkpoint.py  the .npz checkpoints, and RunState: where a run stands
    resume.py      continuing a run from a checkpoint
    history.py     history.json/.csv, one record per epoch
    runfolder.py   the run folder: one owner, every file written whole

Where a run stands is one value, ``trainer.state`` (a RunState: counters,
history, best epoch, the run's identity), saved in every checkpoint beside the
weights, the optimizer's state and the schedule's.  ``Trainer(config,
state=...)`` continues from a state read back from a checkpoint
(``Trainer.resume`` does that).  Only ``trainer.writes`` decides whether this
process writes the run folder (checkpoints, history, plots).

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

from tqdm import tqdm

from . import backend, checkpoint, history, plots
from .graph import GraphStep
from .backend import numpy as np
from .checkpoint import RunState
from .config import check_config
from .datasets import iterate_batches, load_dataset
from .datasets.prefetch import prefetch
from .datasets.split import limit_dataset, split_validation
from .errors import NonFiniteError, TinyAlexNetError
from .layers import SoftmaxCrossEntropy
from .metrics import LossNotFinite, RunningMeter, evaluate, tqdm_disable
from .models import INPUT_SIDE, get_model
from .optim import SGD, Adam, ReduceLROnPlateau, StepLR
from .parallel.strategy import OneProcess
from .resume import check_unused, open_run, settle
from .runfolder import RunFolder
from .stopping import RunStops
from .transforms import Pipeline, paper_canvas

# --------------------------------------------------------------------- what a run reads


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


def check_sizes(config, train, val):
    """Refuse a split with no image to train on or none to validate on, naming the fix."""
    c = config
    if len(train) and len(val):
        return
    if c.val_fraction > 0 and len(val) and not len(train):
        fix = f"lower --val-fraction (now {c.val_fraction:g}) or raise --limit"
    elif c.val_fraction > 0 and len(train) and not len(val):
        fix = f"raise --val-fraction (now {c.val_fraction:g}) or --limit"
    else:
        fix = "raise --limit" if c.limit is not None else "the data set is too small"
    raise TinyAlexNetError(f"data set {c.dataset!r}: {len(train)} training and {len(val)} "
                           f"validation images; need at least one of each ({fix})")


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


def _quiet(*args):
    pass


# --------------------------------------------------------------------- the trainer

class Trainer:
    """Train a model as ``config`` says, writing checkpoints and history to ``out_dir``.

    ``datasets`` = (train, validation, test) and ``pipeline`` may be given
    (tests, notebooks); otherwise they are built from the config.  ``progress``:
    True/False for the progress bars, None to show them on a terminal only.
    ``log`` receives each summary line.  ``on_step(trainer)`` and
    ``on_epoch(trainer, record)`` are called after every step and epoch.
    ``state``: a RunState to continue from (``Trainer.resume`` reads one from a
    checkpoint, and checks the folder); None starts a new run, in a folder no
    earlier run has written to.

        trainer = Trainer(make_config(epochs=2), "runs/demo")
        history = trainer.fit()
        print(trainer.evaluate(trainer.test_set)["accuracy"])

    The run folder (``out_dir``, or a claimed RunFolder; None: a new
    ``runs/<model>-<dataset>-<n>``) is claimed when the Trainer is built (see
    ``runfolder.RunFolder``): no other process may write it until ``fit()``
    returns, or until the end of a ``with trainer:`` block that holds it for
    longer.
    """

    prefetch = True     # read the next batch in a background thread (datasets/prefetch.py)

    def __init__(self, config, out_dir=None, datasets=None, pipeline=None, progress=None,
                 log=_print, on_step=None, on_epoch=None, state=None, parallel=None):
        check_config(config)
        self.config = c = config
        # The processes this run trains on (parallel/strategy.py): alone, or DataParallel.
        self.parallel = parallel or OneProcess()
        first = self.parallel.first        # of several processes, one logs and shows bars
        self.progress, self.log = (progress, log or _quiet) if first else (False, _quiet)
        self.on_step, self.on_epoch = on_step, on_epoch
        self.state = state or RunState()   # where the run stands; all of it is in every checkpoint
        self.meter = None                  # the running numbers of the epoch in progress
        # Whether this process writes the run folder (checkpoints, history, plots): decided
        # here and nowhere else; every method that writes asks it.
        self.writes = self.parallel.writes
        # Claimed first: a folder in use, read-only or impossible fails now, not after an epoch.
        self.run_folder = self.parallel.run_folder(
            lambda: out_dir if isinstance(out_dir, RunFolder) else claim_run_folder(out_dir, c))
        self.hold_folder = False           # keep the folder locked after fit() (``with``)
        try:
            with self.parallel.together("starting the run"):
                self._build(c, datasets, pipeline, state)
        except BaseException:
            self.run_folder.abandon()
            raise
        # How often the running numbers are read back: every step is free on
        # NumPy; on a GPU each read waits for the queue to drain.
        self.read_every = 1 if self.xp is np else c.log_every
        # CuPy compiles each kernel on its first use (cached on disk after): the first
        # epoch a process trains on a GPU is slower, and its log line says so.
        self.compiling = self.xp is not np
        # cuda_graph: the device step replayed as CUDA graphs (graph.py), or eager steps
        # with one line saying why not
        self.graph = GraphStep(self) if c.cuda_graph else None
        self.stops = RunStops(self.state, self.model, self.optimizer, self.run_folder, c,
                              self.steps_per_epoch, save=lambda: self.save("last.npz", self.meter),
                              draw=self.plot_history, log=self.log,
                              agree=self.parallel.agree_stop)
        self.parallel.attach(self.stops)

    def _build(self, c, datasets, pipeline, state):
        """The data, model, pipeline, optimizer and schedule of the run (restored from
        ``state.source`` when it continues one)."""
        if state is None and self.writes:
            check_unused(self.out_dir)       # a new run overwrites no earlier one's files
        self.xp = backend.get_backend(c.backend)      # fails early, with the reason
        self.train_set, self.val_set, self.test_set = datasets or load_data(c)
        check_sizes(c, self.train_set, self.val_set)
        self.parallel.check(c, len(self.train_set))      # a batch that does not split
        self.model = get_model(c.model, num_classes=len(self.classes),
                               in_channels=self.train_set.channels, init=c.init, seed=c.seed)
        source = self.state.source               # the checkpoint a resumed run goes on from
        if pipeline is None and source is not None and source.get("pipeline"):
            pipeline = Pipeline.from_config(source["pipeline"])     # as the run trained
        lighting = c.lighting and self.train_set.channels == 3
        self.pipeline = pipeline or Pipeline.for_dataset(
            self.train_set, self.model.input_shape, augment=c.augment, lighting=lighting)
        self.model.to(c.backend)
        self.model = self.parallel.wrap_model(self.model, c.model)   # two towers: a half
        self.loss_fn = SoftmaxCrossEntropy()
        # Per-layer NaN checks read a value back from the device at every layer:
        # free on NumPy, a stall on the GPU (there the running loss is checked).
        checks = backend.check_finite_default(c.backend)
        self.model.set_check_finite(checks)
        self.loss_fn.set_check_finite(checks)
        self.optimizer = make_optimizer(c, self.model)
        self.scheduler = make_scheduler(c, self.optimizer)
        if source is not None:
            self._restore(source)
            self.state.source = None     # its arrays live in the model and optimizer now

    # ---------------------------------------------------------------- training
    def fit(self):
        """Train until ``config.epochs`` epochs are done; returns the history.

        Raises :class:`Interrupted` after saving on Ctrl-C or SIGTERM, and a
        one-line NonFiniteError (loss diverged), RunFolderError (a checkpoint
        could not be written: disk full, ...) or TinyAlexNetError (GPU out of
        memory) without touching the checkpoints already written.
        """
        c, s = self.config, self.state
        self.run_folder.lock()       # again, if an earlier fit() let go of it
        self.log(f"training {c.model!r} ({self.model.num_parameters():,} parameters) on "
                 f"{c.dataset}: {len(self.train_set):,} training / {len(self.val_set):,} "
                 f"validation images {'x'.join(map(str, self.model.input_shape))}, "
                 f"{c.optimizer} lr {self.optimizer.lr:g}, batch {c.batch_size}, {c.backend} "
                 f"backend{self.parallel.describe()} -> {self.out_dir}")
        try:
            with self.stops:
                while s.epoch < c.epochs:
                    self.stops.check()       # a signal during validation or the saves
                    self._train_epoch()
                    self._end_epoch()
                self.stops.check()           # ... of the last epoch
            self.plot_history()
        finally:
            if not self.hold_folder:
                self.run_folder.unlock()
        return s.history

    def _train_epoch(self):
        """The steps of one epoch, from ``state.step`` on (a resumed epoch goes on where it
        stopped, with its running numbers so far)."""
        c, s = self.config, self.state
        self.model.train()
        # A resumed epoch's sums so far are the whole batch's: one process carries them on.
        self.meter = RunningMeter(self.xp, s.partial if self.parallel.first else None)
        s.partial = None
        batches = prefetch(self.train_set, self.parallel.shard_batches(iterate_batches(
            self.train_set, c.batch_size, c.seed, s.epoch, shuffle=True, start=s.step)),
            enabled=self.prefetch)
        bar = tqdm(total=self.steps_per_epoch, initial=s.step, unit="batch", leave=False,
                   desc=f"epoch {s.epoch + 1}/{c.epochs}", disable=tqdm_disable(self.progress))
        with contextlib.closing(batches), bar:
            for step, _, (images, labels) in batches:
                self._train_step(step, images, labels)
                bar.update(1)
                if (step + 1) % self.read_every == 0:      # on a GPU: a sync
                    now = self.meter.read_finite()         # NaN: stop, name the step
                    bar.set_postfix(loss=f"{now['loss']:.4f}", acc=f"{now['acc']:.3f}",
                                    img_s=f"{self.meter.images_per_second():.0f}", refresh=False)
                if self.on_step is not None:
                    self.on_step(self)
                self.stops.check()                         # Ctrl-C: stop between two steps

    def _train_step(self, step, images, labels):
        """Step number ``step`` of the epoch, on a batch of ``images`` and ``labels`` (host
        arrays): the device's work inside the host's bookkeeping.  The counters move only
        once the update is done."""
        s = self.state
        rng = np.random.default_rng([self.config.seed, s.epoch, step])   # its augmentation
        self.stops.step_begins()
        total = min(self.config.batch_size, len(self.train_set) - step * self.config.batch_size)
        self._device_step(images, labels, rng, s.global_step, total)
        s.step, s.global_step = step + 1, s.global_step + 1

    def _device_step(self, images, labels, rng, global_step, total):
        """The device's work of one step: the batch onto the device, forward, loss,
        backward, update, and the running sums.  It is only queued: nothing here reads a
        number back from the device, and the run's counters (``state``) move outside it.
        ``total``: the images of the whole step, of which these are this process's part
        (all of them alone; see parallel/data.py).  With ``cuda_graph`` the step is a
        replay of the captured step (graph.py)."""
        if self.graph is not None and self.graph.run(images, labels, rng, global_step):
            return
        self._eager_device_step(images, labels, rng, global_step, total)

    def _eager_device_step(self, images, labels, rng, global_step, total=None):
        """The step's work, one array operation after another."""
        total = len(images) if total is None else total
        xp = self.xp
        part = self.parallel.begin_step(self.model, total)       # None alone
        extra = {} if part is None else {"part": part}   # alone, any pipeline(images, ...)
        x = self.pipeline(images, train=True, rng=rng, xp=xp, **extra)     # one copy in
        logits = self.model.forward(x)
        loss = self.loss_fn.forward(logits, labels)             # labels stay on the host
        self.model.backward(self.loss_fn.backward())
        self.parallel.average_gradients(self.model, part)      # the whole batch's gradient
        self.optimizer.step()
        self.meter.add(loss, logits, self.loss_fn.labels, global_step)   # labels: on the device

    def _end_epoch(self):
        """Validate, record, step the schedule, save: the end of one epoch."""
        c, s = self.config, self.state
        train = self.parallel.total(self.meter.read_finite())     # over the processes
        seconds = self.meter.seconds()
        rate = train["count"] / max(seconds, 1e-9)
        val = evaluate(self.model, self.val_set, self.pipeline, c.eval_batch_size,
                       progress=self.progress, desc="validation",
                       world=self.parallel.evaluate_world)
        if not math.isfinite(val["loss"]):
            raise LossNotFinite(s.global_step, "the validation loss became NaN or infinite")
        record = {"epoch": s.epoch + 1, "train_loss": train["loss"], "train_acc": train["acc"],
                  "val_loss": val["loss"], "val_top1_error": val["top1_error"],
                  "val_top5_error": val["top5_error"], "lr": self.optimizer.lr,
                  "time": round(seconds, 3), "images_per_s": round(rate, 1)}
        is_best = s.best_error is None or val["top1_error"] < s.best_error
        with self.stops.ending_epoch():       # the counters and the files change together
            s.history.append(record)
            if self.scheduler is not None:
                self.scheduler.step(val["top1_error"])
            s.epoch, s.step, self.meter = s.epoch + 1, 0, None
            if is_best:
                s.best_error, s.best_epoch = val["top1_error"], s.epoch
            self._write_epoch(is_best)
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
                        ten_crop=ten_crop, progress=self.progress, desc="test",
                        world=self.parallel.evaluate_world)

    # ---------------------------------------------------------------- where the run stands
    @property
    def epoch(self):
        """Epochs completed (``state.epoch``)."""
        return self.state.epoch

    @property
    def history(self):
        """One record per completed epoch (``state.history``)."""
        return self.state.history

    @property
    def classes(self):
        return list(self.train_set.classes)

    @property
    def steps_per_epoch(self):
        return -(-len(self.train_set) // self.config.batch_size)

    @property
    def out_dir(self):
        return self.run_folder.path

    def path(self, name):
        return os.path.join(self.out_dir, name)

    # ---------------------------------------------------------------- saving
    def _write_epoch(self, is_best):
        """last.npz, then best.npz, then the history.  In this order: last.npz records which
        epoch best.npz must hold, so a crash between two writes is repaired on resume."""
        self.save("last.npz")           # every process: a model held in parts is gathered
        if is_best:
            self.save("best.npz")
        if self.writes:
            history.write_history(self.out_dir, self.state.history)

    def save(self, name="last.npz", meter=None):
        """Write a checkpoint of the current state to ``out_dir/name``; returns its path
        (None where this process does not write the run folder).

        ``meter``: the running numbers of an epoch cut short, kept so that the
        resumed epoch's numbers are whole.  Refuses (NonFiniteError) to write a
        state whose loss, weights or optimizer state went NaN or infinite: that
        would replace a good checkpoint with a broken one.
        """
        c, s = self.config, self.state
        partial = s.partial                 # the resumed epoch's numbers, not yet continued
        if meter is not None and meter.count:
            bad = meter.read()["first_bad"]
            if bad is not None:
                raise LossNotFinite(bad + 1)
            partial = self.parallel.total(meter.state())   # every process asks: a collective
        model, optimizer = self.parallel.whole(self.model, self.optimizer)  # every process
        if not self.writes:
            return None
        meta = {**checkpoint.model_meta(model, c.model), **s.meta(), "partial": partial,
                "steps_per_epoch": self.steps_per_epoch, "classes": self.classes,
                "config": dataclasses.asdict(c),
                "pipeline": self.pipeline.config() if hasattr(self.pipeline, "config") else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "extra_state": self.model.get_extra_state()}
        try:
            return checkpoint.save(self.path(name), model, meta, optimizer, finite=True)
        except NonFiniteError as err:
            raise LossNotFinite(s.global_step, f"the weights became NaN or infinite ({err})"
                                ) from None

    def plot_history(self):
        """history.png in ``out_dir``: the curves so far (at the end of ``fit``)."""
        if self.writes and self.state.history:
            plots.plot_history(self.state.history, self.path("history.png"))     # atomic

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
        parallel = kwargs.get("parallel") or OneProcess()
        with parallel.together("opening the run"):
            run = open_run(path, overrides, out_dir,     # claimed, read, checked
                           claim=getattr(parallel, "claim", RunFolder.claim))
        trainer = cls(run.config, run.folder, datasets=datasets, pipeline=pipeline,
                      state=run.state, **kwargs)          # restored from the checkpoint
        try:
            settle(trainer, run)             # repairs, or the branch's first files; --lr
        except BaseException:
            run.folder.abandon()
            raise
        return trainer

    def _restore(self, ck):
        """Weights, dropout counters, optimizer and schedule from the checkpoint ``ck`` the
        state was read from."""
        c = self.config
        data = f"--data-dir {c.data_dir}" if c.data_dir else f"data set {c.dataset!r}"
        checkpoint.check_classes(ck, self.classes, data)
        model, optimizer = self.parallel.whole(self.model, self.optimizer)
        ck.load_model(model, c.model)
        ck.load_optimizer(optimizer)
        ck.load_scheduler(self.scheduler)
        if self.state.step > self.steps_per_epoch:
            raise TinyAlexNetError(f"{ck.path}: saved at step {self.state.step} of an epoch "
                                   f"that has only {self.steps_per_epoch} steps: the data set "
                                   f"changed")

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
