"""A training step replayed as CUDA graphs: the same work, far fewer launches from Python.

On a GPU a small network's step costs the host one launch per array operation
(about a hundred for alexnet32 at batch 64: ``tests/test_launch_budget.py``), each
10-20 microseconds of Python and driver time.  A CUDA graph is a recording of
those launches: captured once, then replayed by one call, which the GPU runs
without asking the host for each kernel.  ``Trainer(..., cuda_graph=True)``
(``train --cuda-graph``) does that::

    step 1          the warm-up: fixed input buffers and device counters are made,
                    the batch is copied in, and the step's body (pipeline, forward,
                    loss, backward, update, the step's running numbers, the counters)
                    runs eagerly on them: CuPy compiles every kernel the capture will
                    record, the optimizer makes its state
    step 2          the batch is copied into the buffers, the body is *captured* on a
                    non-blocking stream, then replayed
    step 3, 4, ...  copy the batch into the same buffers, replay

What a replay cannot do is run Python: every number that changes from step to
step must already live on the device, and be changed there by the graph itself
or by the host between two replays.  So, in graph mode:

* Adam's step t and every Dropout layer's mask counter are entries of one int64
  array on the device (``counters``); the graph's last operation adds one to all
  of them (one launch), and the host mirrors the counts (``optimizer.steps``,
  ``layer.calls``) without reading them back, so checkpoints stay exact;
* the learning rate is a float64 device scalar read by the fused update kernel
  (``kernels/adam.py``, ``kernels/sgd.py``); when a schedule changes
  ``optimizer.lr`` between epochs the host writes it there before the next replay
  (one fill, only when it changed).  A Python float given to a kernel during
  capture would be baked into the graph forever;
* the batch: images and labels are copied into the same device buffers each step
  (``ndarray.set``), which the graph reads, and so are the augmentation's draws
  (random crops and reflections as the crop kernel's table, the lighting's shift):
  drawn on the host from the step's generator, as the eager step draws them
  (``Pipeline.staged`` / ``from_staged``).  The labels are checked on the host
  before (the loss's check would read them back from the device);
* the running numbers: the graph writes the step's loss and top-1/top-5 counts
  into the row of the meter's rows (a buffer of the graph's) whose number is the
  last entry of ``counters``; the meter reads the rows as always and, after each
  read, the host puts that number back to 0 (one fill per read, not per step).

Why a chain of graphs, not one.  CuPy 14 refuses cuBLAS calls inside a capture:
``cupy_backends/cuda/libs/cublas.pyx``, ``setStream``, which every cuBLAS routine
calls first, raises ``NotImplementedError('calling cuBLAS API during stream
capture is currently unsupported')`` when the stream is capturing (read in CuPy's
v14 branch; its comment says most cuBLAS calls could be captured since CUDA 11.5,
but CuPy has not enabled it).  So every matrix product of the step goes through
:func:`matmul`, which during capture ends the current graph, runs the product
eagerly and begins the next graph; a replay is then: graph, product, graph,
product, ..., graph, each product run again with its captured arrays, writing
into the array it made the first time (``out=``).  Products made anywhere else
(``@`` in the readable layers, Winograd's products) make the capture fail, and
the trainer falls back to eager steps with one line that says why.

CuPy's memory pool during capture (``cupy/cuda/memory.pyx``,
``SingleDeviceMemoryPool``): one arena of free blocks per stream, nothing special
for capture; a block freed while capturing goes back to the capturing stream's
arena and the next allocation on that stream may get it, and the pool may grow
with ``cudaMalloc``, allowed because ``Stream.begin_capture`` uses the relaxed
capture mode (``cupy/cuda/stream.pyx``).  A graph replays into the addresses it
captured: so every block the graph uses must stay its own.  The capture therefore
allocates from a pool of its own (``cupy.cuda.using_allocator(pool.malloc)``),
kept by the StepGraph and used by nobody else afterwards, and the StepGraph keeps
the arrays the products read and write.  During capture nothing runs on the GPU
(the kernels are recorded, not executed), and host transfers are refused
(``memory.pyx``: "the current stream is capturing, so H2D/D2H transfers are
disallowed"): the step after capture is done by the first replay.

The tests (``tests/test_graph.py``) replay the graph on the strict CuPy stand-in,
which records each operation during capture and re-executes the recorded calls on
the same buffers (``tests/strict_cupy.py``), and compare N replays with N eager
steps bit for bit.
"""
import copy

from . import backend
from .backend import numpy as np
from .errors import TinyAlexNetError
from .parallel.strategy import OneProcess

_cut = None       # during a capture: the function that cuts it at a matrix product


def matmul(a, b, out=None):
    """``xp.matmul(a, b, out=out)``: every cuBLAS product of the fast paths goes through
    here, so that a capture in progress can be cut around it (see the module's doc)."""
    if _cut is not None:
        return _cut(a, b, out)
    xp = backend.get_array_module(a)
    return xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)


def _one_line(err):
    """``Type: first line of the message``."""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class CannotCapture(TinyAlexNetError):
    """Why a step cannot be replayed as a graph (one line; the trainer runs eagerly)."""


class StepGraph:
    """A device step captured once and replayed: a chain of CUDA graphs and the cuBLAS
    products between them.

    ``capture(body)`` runs ``body()`` (the device's work of one step, which must read
    its inputs from fixed device buffers) under stream capture and returns what it
    returned (arrays: filled by replays); ``replay()`` runs it again.
    """

    def __init__(self, xp):
        if getattr(getattr(xp, "cuda", None), "Stream", None) is None:
            raise CannotCapture("CUDA graphs need CuPy (the NumPy backend runs eagerly)")
        self.xp = xp
        self.stream = xp.cuda.Stream(non_blocking=True)   # capture needs a non-default stream
        self.pool = xp.cuda.MemoryPool()     # the graph's own memory (see the module's doc)
        self.segments = []                   # Graph objects and (a, b, out) products, in order

    @property
    def graphs(self):
        return sum(1 for s in self.segments if not isinstance(s, tuple))

    @property
    def products(self):
        return sum(1 for s in self.segments if isinstance(s, tuple))

    def capture(self, body):
        global _cut
        xp, stream, segments = self.xp, self.stream, []

        def cut(a, b, out):
            segments.append(stream.end_capture())
            r = xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)   # eager
            segments.append((a, b, r))
            stream.begin_capture()
            return r

        self._wait_for(xp.cuda.get_current_stream(), stream)
        with xp.cuda.using_allocator(self.pool.malloc), stream:
            stream.begin_capture()
            _cut = cut
            try:
                outputs = body()
            except BaseException:
                _cut = None
                try:
                    stream.end_capture()
                except Exception:   # the capture may already be invalid: its own error says why
                    pass
                raise
            _cut = None
            segments.append(stream.end_capture())
        self.segments = segments
        return outputs

    def replay(self, before=None):
        """One replay on the graph's stream, after the work queued so far on the current
        stream; ``before()``, if given, runs first on the graph's stream (the batch's copies
        into the input buffers).  The current stream's later work waits for the replay."""
        xp = self.xp
        current = xp.cuda.get_current_stream()
        self._wait_for(current, self.stream)
        with self.stream:
            if before is not None:
                before()
            for s in self.segments:
                if isinstance(s, tuple):
                    a, b, r = s
                    xp.matmul(a, b, out=r)
                else:
                    s.launch(self.stream)
        self._wait_for(self.stream, current)

    @staticmethod
    def _wait_for(first, then):
        """``then`` runs its later work after what ``first`` has queued (an event, no sync)."""
        then.wait_event(first.record())


# --------------------------------------------------------------------- the trainer's step

class GraphStep:
    """The Trainer's step as a StepGraph: fixed input buffers, counters on the device, a
    warm-up step (the body run eagerly), the capture, replays, and the fallback to eager
    steps.

    ``run(images, labels, rng, global_step)`` does one step and returns True, or False
    when this step must run eagerly (the trainer then runs its own step).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.graph = None
        self.failed = None          # the reason, once the graph was given up
        self.batch_shape = None
        self.fused_before = trainer.optimizer.fused
        reason = self.reason_not()
        if reason:
            self.give_up(reason)
        else:
            # the fused update kernels read lr and t from the device: on from the first
            # (warm-up) step, so that every step runs the same update
            trainer.optimizer.fused = True

    # ------------------------------------------------------------------ what can be captured
    def reason_not(self):
        """Why this trainer's step cannot be captured (a few words), or None."""
        t = self.trainer
        xp = t.xp
        if getattr(getattr(xp, "cuda", None), "Stream", None) is None:
            return "CUDA graphs need the cupy backend"
        if type(t.parallel) is not OneProcess:       # DataParallel and ModelParallel extend it
            return "a step on several processes (--data-parallel, --model-parallel) waits " \
                   "on the other processes inside the step"
        pipe = t.pipeline
        if not hasattr(pipe, "staged"):
            return f"the pipeline ({type(pipe).__name__}) has no fixed input buffers (staged)"
        if getattr(pipe, "resize", None) is not None:
            return "the pipeline resizes the images on the device before cropping them"
        for name, layer in t.model.layers.items():
            if not getattr(layer, "fast", True):
                return f"layer {name} runs its readable path (fast=False), whose products " \
                       f"are not cut out of the capture"
            if getattr(layer, "use_winograd", False):
                return f"layer {name} runs Winograd's products, not cut out of the capture"
        return None

    def give_up(self, reason):
        self.failed = reason
        self.detach()
        self.trainer.optimizer.fused = self.fused_before
        meter = getattr(self.trainer, "meter", None)
        if meter is not None:
            meter._restart = None         # its rows may grow again: eager steps fill them
        self.trainer.log(f"cuda graph: not used ({reason}); training runs eagerly")

    # ------------------------------------------------------------------ one step
    def run(self, images, labels, rng, global_step):
        if self.failed is not None:
            return False
        if self.batch_shape is None:
            return self._warm_up(images, labels, rng, global_step)
        if images.shape != self.batch_shape[0] or labels.shape != self.batch_shape[1]:
            self._eager_in_graph_mode(images, labels, rng, global_step)   # a short last batch
            return True
        staged = self._staged(images, labels, rng)
        if self.graph is None:
            return self._capture_and_replay(staged, global_step)
        self._replay(staged, global_step)
        return True

    def _staged(self, images, labels, rng):
        """The step's host arrays for the input buffers, labels checked (a bad batch raises
        its own one-line error, as the eager step would)."""
        t = self.trainer
        t.loss_fn.check_label_values(labels, len(t.classes))
        rng = copy.deepcopy(rng)      # the caller's stays as it was, for an eager step instead
        return {"images": images, "labels": labels, **t.pipeline.staged(images, True, rng)}

    def _dropouts(self):
        from .layers.dropout import Dropout
        return [m for _, m in self.trainer.model.named_modules() if isinstance(m, Dropout)]

    def _warm_up(self, images, labels, rng, global_step):
        """The first step: the fixed buffers and device counters made, then the step's body
        run eagerly on them (every kernel the capture will record is compiled and loaded
        now, and the optimizer makes its state: nothing new happens inside the capture)."""
        t = self.trainer
        xp, opt = t.xp, t.optimizer
        reason = self.reason_not()                  # (a layer may have changed since)
        if reason:
            self.give_up(reason)
            return False
        staged = self._staged(images, labels, rng)
        try:
            # the input buffers: images, labels, and the pipeline's crop table and shift
            self.inputs = {k: xp.empty(a.shape, dtype=a.dtype) for k, a in staged.items()}
            self.images, self.labels = self.inputs["images"], self.inputs["labels"]
            dtype = next(iter(t.model.named_parameters()))[1].dtype    # the loss's
            self.stats = xp.empty((3,), dtype=dtype)
            # t for the coming update, each Dropout layer's next mask number, the meter's row
            written = len(t.meter._written)
            self.counters = xp.asarray(np.array(
                [opt.steps + 1] + [d.calls for d in self._dropouts()] + [written],
                dtype=np.int64))
            self.cursor = self.counters[-1:]
            self.rows = xp.empty((max(t.read_every, 64), 3), dtype=dtype)
            self._meter, self._cursor = None, written
            self.lr = xp.asarray(np.array([opt.lr], dtype=np.float64))
            self._lr_written = opt.lr
            self.thresholds = xp.asarray(np.array([len(t.classes) - k for k in (1, 5)]))
            self._attach(self._dropouts())
            self._attach_meter()
            self._copy_in(staged)
        except Exception as err:
            self.give_up(f"its buffers could not be made: {_one_line(err)}")
            return False
        try:
            self._host_neutral(self._body)
        except Exception as err:
            self.give_up(f"the step's body failed on the device buffers: {_one_line(err)}")
            return False
        self.batch_shape = (images.shape, labels.shape)
        self._advance(global_step)
        return True

    def _host_neutral(self, work):
        """``work()`` (the body, run or captured) with the host's counts as they were after
        it: they move in ``_advance``, once per step done on the device."""
        opt, dropouts = self.trainer.optimizer, self._dropouts()
        saved = (opt.steps, [d.calls for d in dropouts])
        try:
            return work()
        finally:
            opt.steps = saved[0]
            for d, calls in zip(dropouts, saved[1]):
                d.calls = calls

    def _body(self):
        """The device's work of one step, from the input buffers to the meter's row and the
        counters: run eagerly once (the warm-up), then captured."""
        from .metrics import step_numbers
        t = self.trainer
        pipeline_inputs = {k: a for k, a in self.inputs.items() if k not in ("images", "labels")}
        x = t.pipeline.from_staged(self.images, pipeline_inputs)
        logits = t.model.forward(x)
        loss = t.loss_fn.forward(logits, self.labels, labels_checked=True)
        t.model.backward(t.loss_fn.backward())
        t.optimizer.step()
        step_numbers(loss, logits, self.labels, self.thresholds, out=self.stats)
        self.rows[self.cursor] = self.stats        # the row the device counts
        self.counters += 1
        return loss

    def _capture_and_replay(self, staged, global_step):
        t = self.trainer
        try:
            # on the GPU the capture runs nothing: the first replay does this step (or, if
            # the capture fails, the eager step)
            graph = StepGraph(t.xp)
            self._host_neutral(lambda: graph.capture(self._body))
        except Exception as err:
            self.give_up(f"the step could not be captured: {_one_line(err)}")
            return False
        self.graph = graph
        t.log(f"cuda graph: captured ({graph.graphs} graphs and {graph.products} matrix "
              f"products between them per step)")
        self._replay(staged, global_step)
        return True

    def _attach(self, dropouts):
        """The device counters and learning rate, where the kernels read them."""
        opt = self.trainer.optimizer
        opt.lr_device, opt.step_device = self.lr, self.counters[0:1]
        for k, d in enumerate(dropouts):
            d.counter = self.counters[k + 1:k + 2]

    def detach(self):
        """Back to host numbers (eager steps read them as before)."""
        t = self.trainer
        opt = getattr(t, "optimizer", None)
        if opt is not None:
            opt.lr_device = opt.step_device = None
        for d in self._dropouts() if getattr(t, "model", None) is not None else ():
            d.counter = None

    def _copy_in(self, staged):
        """The step's host arrays into the input buffers (one copy each)."""
        for name, a in staged.items():
            buffer = self.inputs[name]
            buffer.set(np.ascontiguousarray(a, dtype=buffer.dtype))

    def _attach_meter(self):
        """The epoch's meter keeps its rows in the graph's (a new meter each epoch)."""
        meter = self.trainer.meter
        if meter is self._meter:
            return
        k = len(meter._written)
        meter.use_rows(self.rows, self._restart)
        if self._cursor != k:         # (the last meter was left unread: a stop)
            self.cursor.fill(k)
            self._cursor = k
        self._meter = meter

    def _restart(self):
        self.cursor.fill(0)
        self._cursor = 0

    def _replay(self, staged, global_step):
        opt = self.trainer.optimizer
        self._attach_meter()
        if opt.lr != self._lr_written:        # a schedule changed it: written before the replay
            self.lr.fill(opt.lr)
            self._lr_written = opt.lr
        self.graph.replay(before=lambda: self._copy_in(staged))
        self._advance(global_step)

    def _advance(self, global_step):
        """After a step on the device: the host's mirrors of the device counters move on."""
        self.trainer.optimizer.steps += 1
        for d in self._dropouts():
            d.calls += 1
        self._cursor += 1
        self.trainer.meter.add_written(self.batch_shape[1][0], global_step)

    def _eager_in_graph_mode(self, images, labels, rng, global_step):
        """A step whose batch does not fit the buffers: eager, on host numbers, then the
        device counters follow (one launch)."""
        self._attach_meter()
        self.detach()
        try:
            self.trainer._eager_device_step(images, labels, rng, global_step)
        finally:
            self._attach(self._dropouts())
        self.counters += 1
        self._cursor += 1
