"""How well a network does: top-k counts, an epoch's running numbers, ``evaluate``.

    top1, top5 = topk_correct(scores, labels)          # counts, on the scores' device
    meter = RunningMeter(xp); meter.add(loss, logits, labels, step); meter.read()
    evaluate(model, test_set, pipeline)["top1_error"]  # loss, top-1/top-5 error, confusion

On a GPU every number read back to the host makes the host wait for the
device, so everything here counts *on the device* and reads once: the meter
when the loop asks (every ``log_every`` steps), ``evaluate`` at its end.
Scores are log-probabilities from the loss layer's own ``log_softmax``.
"""
import math
import time

from tqdm import tqdm

from . import backend, kernels
from .backend import numpy as np
from .datasets import iterate_batches
from .errors import NonFiniteError, TinyAlexNetError
from .layers.loss import log_softmax


def topk_correct(scores, labels, ks=(1, 5)):
    """How many rows have their true class among the k highest scores, for each k.

    No sorting: the true class is in the top k exactly when fewer than k scores
    are at least as high as its own (itself included, so "rank <= k").  Ties
    count against the prediction, so a network that outputs the same score for
    every class is never "right"; so does NaN (every comparison with NaN is
    false, so "not below" counts it), so a broken network is never right either.
    Returns 0-d arrays on the scores' device.
    """
    rank = scores.shape[1] - below_true(scores, labels)     # 1 for a clear winner
    return tuple((rank <= k).sum() for k in ks)


def below_true(scores, labels):
    """For each row, how many of its scores are below the true class's own (B,) integers.

    rank = K - below_true counts the scores *not* below, the true one and NaN included.
    The true scores are one gather from the flattened array, row n's at n*K + labels[n]:
    three operations on a GPU where ``scores[arange(B), labels]`` launches five.  On a
    GPU all of it is one kernel, a thread per row (``kernels/topk.py``).
    """
    if kernels.runs_on(scores):
        return kernels.topk.below_true(scores, labels)
    xp = backend.get_array_module(scores)
    N, K = scores.shape
    true = scores.reshape(-1)[xp.arange(0, N * K, K) + labels]
    return (scores < true[:, None]).sum(axis=1)


def step_numbers(loss, logits, labels, thresholds, out):
    """A step's row of the running numbers, into ``out`` (3,) on the device: the loss, and
    how many rows have their true class in the top k for each k of ``RunningMeter.KS``
    (``thresholds``: K - k each, on the device; rank <= k  <=>  below_true >= K - k).
    Whole numbers <= the batch, exact in float32."""
    out[0] = loss
    out[1:] = (below_true(logits, labels)[:, None] >= thresholds).sum(axis=0)
    return out


class LossNotFinite(NonFiniteError):
    """The running loss was found NaN or infinite; ``step`` counts from 1 over the run."""

    def __init__(self, step, message="the loss became NaN or infinite"):
        super().__init__(message)
        self.step = step


class RunningMeter:
    """An epoch's running numbers.  Each step writes its loss and its top-1 and top-5
    counts into one row of a small array on the device (nothing is read); ``read()``
    copies the rows written since the last read to the host, the one sync, and adds
    them up there in float64, step by step: the sums do not depend on how often they
    are read, and the first step whose loss was not finite is known by its row, so a
    GPU run that diverges can still name the step.  The image count and the clock are
    kept on the host.

    ``partial``: the sums, count and seconds of an epoch cut short, from a
    checkpoint, to continue from.
    """

    KS = (1, 5)          # the top-k counts kept

    def __init__(self, xp, partial=None):
        p = partial or {}
        self.xp = xp
        self.loss_sum = float(p.get("loss_sum", 0.0))
        self.correct1 = float(p.get("correct1", 0.0))
        self.correct5 = float(p.get("correct5", 0.0))
        self.first_bad = None                    # the first step whose loss was not finite
        self.count = p.get("count", 0)           # images so far: known on the host
        self.seconds_before = p.get("time", 0.0)  # spent on this epoch before a resume
        self.count_before = self.count
        self.started = time.perf_counter()
        self._rows = None        # (capacity, 3) on the device: loss, top-1, top-5 of a step
        self._written = []       # (step, images) of each row written since the last read
        self._thresholds = None  # K - k for k in KS: rank <= k  <=>  below_true >= K - k
        self._restart = None     # rows written at the device's own row number: see use_rows

    def add(self, loss, logits, labels_dev, step):
        xp, n = self.xp, int(labels_dev.shape[0])
        if self._rows is None or len(self._written) == self._rows.shape[0]:
            if self._restart is not None:
                raise TinyAlexNetError(f"RunningMeter: {len(self._written)} steps without a "
                                       f"read, the graph's rows hold {self._rows.shape[0]}")
            self._grow(loss.dtype)
        if self._thresholds is None:             # copied in once an epoch, not every step
            K = logits.shape[1]
            self._thresholds = xp.asarray(np.array([K - k for k in self.KS]))
        step_numbers(loss, logits, labels_dev, self._thresholds,
                     out=self._rows[len(self._written)])
        self._written.append((step, n))
        self.count += n

    def use_rows(self, rows, restart):
        """Keep the rows in ``rows`` (capacity, 3), which a replayed CUDA graph writes at a
        row number of its own on the device (graph.py): the rows written so far are copied
        there; ``restart()`` is called after each read (the graph's next row is row 0 again)."""
        k = len(self._written)
        if k:
            rows[:k] = self._rows[:k]
        self._rows, self._restart = rows, restart

    def add_written(self, n, step):
        """A step whose row the device wrote itself (a replayed CUDA graph), for ``n``
        images: the host only notes it."""
        if len(self._written) == self._rows.shape[0]:
            raise TinyAlexNetError(f"RunningMeter: {len(self._written)} steps without a read, "
                                   f"the graph's rows hold {self._rows.shape[0]}")
        self._written.append((step, n))
        self.count += n

    def _grow(self, dtype):
        """Room for more rows (twice as many; 64 at first), the rows so far kept."""
        old = self._rows
        rows = self.xp.empty((64 if old is None else 2 * old.shape[0], 3), dtype=dtype)
        if old is not None:
            rows[:old.shape[0]] = old
        self._rows = rows

    def read(self):
        """``{"loss", "acc", "top5_acc", "count", "first_bad", ...}`` as host numbers (one sync,
        none if no step was added since the last read)."""
        if self._written:
            values = backend.as_numpy(self._rows[:len(self._written)])   # the one read
            for (step, n), (loss, c1, c5) in zip(self._written, values.tolist()):
                self.loss_sum += loss * n
                self.correct1 += c1
                self.correct5 += c5
                if self.first_bad is None and not math.isfinite(loss):
                    self.first_bad = step
            self._written = []
            if self._restart is not None:
                self._restart()
        n = max(self.count, 1)
        return {"loss_sum": self.loss_sum, "correct1": self.correct1,
                "correct5": self.correct5, "count": self.count, "loss": self.loss_sum / n,
                "acc": self.correct1 / n, "top5_acc": self.correct5 / n,
                "first_bad": self.first_bad}

    def read_finite(self):
        """:meth:`read`, raising LossNotFinite (naming the first bad step) if a loss was not."""
        values = self.read()
        if values["first_bad"] is not None:
            raise LossNotFinite(values["first_bad"] + 1)
        return values

    def seconds(self):
        """Seconds spent on the epoch, before a resume included."""
        return self.seconds_before + time.perf_counter() - self.started

    def images_per_second(self):
        """Images per second since this process began the epoch."""
        return (self.count - self.count_before) / max(time.perf_counter() - self.started, 1e-9)

    def state(self):
        """The numbers a checkpoint keeps of an epoch cut short (``partial``)."""
        values = self.read()
        state = {k: values[k] for k in ("loss_sum", "correct1", "correct5", "count")}
        state["time"] = self.seconds()
        return state


def tqdm_disable(progress):
    """tqdm's ``disable``: None (the default) hides bars when output is not a terminal."""
    return None if progress is None else not progress


def evaluate(model, dataset, pipeline, batch_size=256, ten_crop=False, progress=False,
             desc="evaluate", world=None):
    """Loss, top-1 and top-5 error and the confusion matrix of ``model`` on ``dataset``.

    With ``ten_crop`` each image is scored as in the paper's test procedure:
    the softmax outputs of ten crops (four corners and centre, and their
    reflections) are averaged.  Returns ``{"loss", "top1_error", "top5_error",
    "accuracy", "count", "confusion"}``; ``confusion[i, j]`` counts images of
    class i predicted as j.  A model whose outputs are not finite gets a NaN loss.

    On a GPU the sums stay on the device and are read once, at the end: the
    layers' NaN checks (each a read) are off meanwhile, and the confusion
    matrix is a product of one-hot matrices rather than ``bincount`` (which
    reads the largest value back to size its result).

    ``world`` (parallel/mpi.py's World, several processes): each process scores
    its share of the images (process r of N: images r*n/N .. (r+1)*n/N), and the
    sums and the confusion matrix are added up over the processes.
    """
    xp = model.xp
    was_training = model.training
    checks = [(m, m.check_finite) for _, m in model.named_modules()]
    if xp is not np:
        model.set_check_finite(False)
    model.eval()
    totals = xp.zeros(3, dtype=xp.float64)       # loss sum, top-1 and top-5 correct counts
    confusion = None
    n = 0
    batches, total = _batches(len(dataset), batch_size, world)
    try:
        for _, indices in tqdm(batches, total=total, desc=desc, leave=False, unit="batch",
                               disable=tqdm_disable(progress)):
            images, labels = dataset.get_batch(indices)
            if ten_crop:
                crops = pipeline.ten_crop(images, xp)            # (10, B, C, H, W)
                probs = sum(xp.exp(log_softmax(model.forward(c))) for c in crops) / len(crops)
                scores = xp.log(xp.maximum(probs, 1e-30))
            else:
                scores = log_softmax(model.forward(pipeline(images, train=False, xp=xp)))
            K = scores.shape[1]
            if labels.size and int(labels.max()) >= K:
                raise TinyAlexNetError(f"evaluate: the data set has labels up to "
                                       f"{int(labels.max())} but the model has {K} classes")
            y = xp.asarray(labels)
            loss_sum = -scores[xp.arange(len(labels)), y].astype(xp.float64).sum()
            c1, c5 = topk_correct(scores, y)
            totals = totals + xp.stack([loss_sum, c1.astype(xp.float64), c5.astype(xp.float64)])
            # confusion[i, j] += how many images of class i were predicted as j, i.e.
            # onehot(true)^T @ onehot(predicted); exact, the counts are whole numbers < 2^24.
            classes = xp.arange(K)
            true = (y[:, None] == classes).astype(xp.float32)                # (B, K)
            predicted = (scores.argmax(axis=1)[:, None] == classes).astype(xp.float32)
            if confusion is None:
                confusion = xp.zeros((K, K), dtype=xp.float64)
            confusion += true.T @ predicted
            n += len(labels)
    finally:
        model.train(was_training)
        for m, flag in checks:
            m.check_finite = flag
    if n == 0:
        raise TinyAlexNetError(f"evaluate: the data set {getattr(dataset, 'name', '')!r} is empty")
    values = backend.as_numpy(xp.concatenate([totals, confusion.reshape(-1)]))   # the one read
    if _shards(len(dataset), world):
        values = world.sum(np.append(values, n), "adding up the evaluation")
        n = int(values[-1])
    loss_sum, correct1, correct5 = values[:3]
    return {"loss": float(loss_sum / n), "top1_error": float(1 - correct1 / n),
            "top5_error": float(1 - correct5 / n), "accuracy": float(correct1 / n),
            "count": n, "confusion": values[3:3 + K * K].reshape(K, K).round().astype(np.int64)}


def _shards(n, world):
    """Whether ``evaluate`` splits ``n`` images over the processes of ``world``: when there
    are several, and at least one image for each (else every process scores all)."""
    return world is not None and 1 < world.size <= n


def _batches(n, batch_size, world):
    """(step, indices) of the batches this process scores, and how many there are."""
    if not _shards(n, world):
        return iterate_batches(range(n), batch_size, shuffle=False), -(-n // batch_size)
    lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
    mine = np.arange(lo, hi)
    steps = -(-(hi - lo) // batch_size)
    return ((k, mine[k * batch_size:(k + 1) * batch_size]) for k in range(steps)), steps
