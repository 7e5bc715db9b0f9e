"""The paper's two towers on two processes: tower 0 on rank 0, tower 1 on rank 1.

Figure 2 of the paper draws AlexNet as two towers, one per GPU, that talk only
at certain layers.  Here each tower is an ordinary ``Sequential`` of the
project's layers, holding half of every layer (``towers.py`` says which half),
with *exchange* layers inserted where the figure has its crossings::

    image (on both) -> conv1 relu1 norm1* pool1 -> conv2 relu2 norm2* pool2
        -> [to_conv3] conv3 relu3 -> conv4 relu4 -> conv5 relu5 pool5 flatten
        -> [to_fc6] fc6 relu6 drop6 -> [to_fc7] fc7 relu7 drop7 -> [to_fc8] fc8 -> [logits]

    [to_X]   Gather: X reads both towers' maps (conv3, fc6, fc7, fc8 have no groups)
    norm*    HaloLRN: see below; conv2, conv4, conv5 (groups=2) read their own tower only
    [logits] GatherOutput: both towers' halves of fc8 side by side for the softmax

Then each rank computes the same loss from the same logits, and backward runs
the same list in reverse, the exchanges passing gradients back.  The equality
with the one-process grouped model (``pytest -k model_parallel``) is the proof.

The exchange of two towers is one operation, ``Peer.swap``: send my array, get
the other rank's array of the same shape (one MPI send and receive, waited for
within the run's ``--rank-timeout``).  Every crossing is built from it.  With x_t tower t's half, N the batch, C the channels (or
features) of the whole layer:

**Gather** (an all-gather along axis 1).  Forward, on tower t::

    x_t (N, C/2, ...)  --swap-->  x_other (N, C/2, ...)
    y = [x_0 | x_1]    (N, C, ...)                   both ranks hold the same y

Backward.  y feeds *this* tower's half of the next layer only, so the
gradient dy_t (N, C, ...) that arrives here is this tower's part of dL/dy;
the whole of it is dy_0 + dy_1 (L depends on y through both towers).  Tower t
needs only its own columns of that sum::

    dx_t = dy_0[:, cols_t] + dy_1[:, cols_t]          (N, C/2, ...)

so tower t sends ``dy_t[:, cols_other]`` (N, C/2, ...) and adds what comes back
to ``dy_t[:, cols_t]``: the backward of an all-gather is a reduce-scatter, the
same bytes as the forward, the other way.

**GatherOutput** (fc8's logits, before the loss).  Forward as Gather.  But the
loss after it is computed *identically* on both ranks (not once per tower and
summed), so dL/dlogits arriving on each rank is already the whole gradient:
``dx_t = dy[:, cols_t]``, no exchange.  (Summing here would double it.)

**SharedInput** (the image, before conv1).  Both towers read the same x; its
gradient is the sum of what the two conv1 halves send back, an all-reduce:
``dx = dx_0 + dx_1`` (N, C, H, W).  Only needed when the input's gradient is
(saliency maps, the tests): conv1.input_grad is off in training.

**HaloLRN.**  One exchange the figure does not draw.  The paper's response
normalisation ran on each GPU over its own kernel maps; ours (one process)
sums over the 5 channels around c *across the whole layer*, so channels 46-49
of norm1 mix the two towers.  To equal the one-process model exactly, each
tower borrows the ``size // 2`` = 2 channels next to its edge from the other
(a halo), normalises its channels plus the halo, and keeps its own::

    tower 0: [x_0 | x_1[:, :2]] -> LRN -> keep channels 0 .. C/2-1
    tower 1: [x_0[:, -2:] | x_1] -> LRN -> keep channels 2 .. C/2+1

Backward: the halo's gradient (what tower t's outputs owe the other tower's
two edge channels) goes back and is added there.  In AlexNet that is 2 of a
tower's 48 channels at norm1 and 2 of its 128 at norm2.

``Towers`` is the model of one rank: ``forward``, ``backward``, the optimizer
and the flat buffers as for any model (its ``state_dict`` is its half);
``joined_state_dict()`` (on both ranks together) is the one-process state, for
checkpoints (``whole()``: the model and optimizer as a checkpoint holds them).
Its exchanges count their bytes and time (``traffic()``), which
``python -m tinyalexnet.parallel.towers_bench`` prints.  ``ModelParallel`` is
what the Trainer calls for ``--model-parallel 2`` (``parallel/strategy.py``'s
hooks): the whole batch on both ranks, rank 0 writes.
"""
import copy
import time

from .. import backend, rng
from ..backend import get_array_module
from ..errors import ConfigError
from ..layers import Conv2d, Dropout, Linear, LocalResponseNorm, Module, Sequential
from ..layers import fast, functional
from .data import DataParallel
from .towers import TOWERS, check_towers, join_state, split_state, tower_rows


# --------------------------------------------------------------------- the one exchange

SWAP_TAG = 23          # the MPI tag of the towers' swaps (parallel/mpi.py's notes use 17)


class Peer:
    """The other tower's process.  ``world``: the run's ``parallel.mpi.World`` (rank, size,
    mpi4py's comm, and the deadline every wait keeps), of exactly 2 ranks."""

    def __init__(self, world):
        if world.size != TOWERS:
            raise ConfigError(f"--model-parallel 2 runs on exactly 2 processes (mpiexec -n 2), "
                              f"got {world.size}")
        self.world = world
        self.rank = world.rank
        self.other = 1 - self.rank

    def swap(self, a, what="the towers' exchange"):
        """Send ``a`` to the other rank, return its array of the same shape and dtype.

        Non-blocking send and receive, waited for within the World's deadline: a tower
        whose partner died stops with one line naming it (``RankTimeout``), never hangs.
        MPI reads host memory: a CuPy array goes through the host (one copy each way;
        CUDA-aware MPI could skip them, not used here)."""
        device = backend.backend_of(a)
        host = backend.numpy.ascontiguousarray(backend.as_numpy(a))
        received = backend.numpy.empty_like(host)
        comm = self.world.comm
        recv = comm.Irecv(received, source=self.other, tag=SWAP_TAG)
        send = comm.Isend(host, dest=self.other, tag=SWAP_TAG)
        # both requests wait on the other rank alone; 1 ms between polls after the first
        # second (a swap happens many times a step: it must not sleep long)
        self.world._wait([recv, send], what, {self.other: (recv, send)}, pause=0.001)
        return backend.to_backend(received, device)


class Exchange(Module):
    """What the crossings share: the peer, and the bytes and seconds they moved."""

    def __init__(self, peer):
        super().__init__()
        self.peer = peer
        self.reset_traffic()

    def reset_traffic(self):
        """Zero the counters: bytes sent forward / backward, images, seconds in swap."""
        self.sent = {"forward": 0, "backward": 0}
        self.images = {"forward": 0, "backward": 0}
        self.seconds = 0.0

    def _swap(self, a, direction, images):
        start = time.perf_counter()
        got = self.peer.swap(a, f"exchanging {self.name or 'activations'}")
        self.seconds += time.perf_counter() - start
        self.sent[direction] += int(a.nbytes)
        self.images[direction] += images
        return got

    def __deepcopy__(self, memo):        # the peer (a communicator) is shared, never copied
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, value if key == "peer" else copy.deepcopy(value, memo))
        return new


class Gather(Exchange):
    """The next layer reads both towers: (N, C/2, ...) -> (N, C, ...), [tower 0 | tower 1].
    Backward: a reduce-scatter (see the module's docstring)."""

    def forward(self, x):
        self._check_input(x)
        other = self._swap(x, "forward", x.shape[0])
        halves = (x, other) if self.peer.rank == 0 else (other, x)
        y = get_array_module(x).concatenate(halves, axis=1)
        self._save(y.shape, x.shape[1])
        return y

    def backward(self, dout):
        (half,) = self._saved(dout)
        mine = slice(self.peer.rank * half, (self.peer.rank + 1) * half)
        theirs = slice(self.peer.other * half, (self.peer.other + 1) * half)
        # my consumer's gradient for the other tower's columns goes to it; its for mine comes
        got = self._swap(dout[:, theirs].copy(), "backward", dout.shape[0])
        return dout[:, mine] + got


class GatherOutput(Gather):
    """fc8's halves side by side, (N, K/2) -> (N, K), for a loss that both ranks compute
    alike: backward takes this tower's columns of the (whole) gradient, no exchange."""

    def backward(self, dout):
        (half,) = self._saved(dout)
        return dout[:, self.peer.rank * half:(self.peer.rank + 1) * half]


class SharedInput(Exchange):
    """The image, read by both towers' conv1: forward the identity, backward the sum of the
    two towers' input gradients (an all-reduce; None when conv1 returns none)."""

    def forward(self, x):
        return x

    def backward(self, dout):
        if dout is None:
            return None
        return dout + self._swap(dout, "backward", dout.shape[0])


class HaloLRN(Exchange):
    """LocalResponseNorm across the whole layer's channels, on one tower's half: borrows
    ``size // 2`` edge channels from the other tower (see the module's docstring)."""

    def __init__(self, peer, lrn):
        super().__init__(peer)
        self.norm = LocalResponseNorm(lrn.size, lrn.alpha, lrn.beta, lrn.k)
        self.norm.fast = lrn.fast

    def children(self):
        return iter((("norm", self.norm),))

    def forward(self, x):
        self._check_input(x, 4, "(N, C, H, W)")
        xp, h, C = get_array_module(x), self.norm.size // 2, x.shape[1]
        if h == 0:
            self._save(x.shape, 0, C)
            return self.norm.forward(x)
        if C < h:
            raise ConfigError(f"{self.label()}: {C} channels per tower, fewer than the halo {h}")
        if self.peer.rank == 0:      # send my last h channels, get the other's first h
            halo = self._swap(x[:, C - h:].copy(), "forward", x.shape[0])
            out = self.norm.forward(xp.concatenate((x, halo), axis=1))[:, :C]
        else:
            halo = self._swap(x[:, :h].copy(), "forward", x.shape[0])
            out = self.norm.forward(xp.concatenate((halo, x), axis=1))[:, h:]
        self._save(out.shape, h, C)
        return out

    def backward(self, dout):
        h, C = self._saved(dout)
        if h == 0:
            return self.norm.backward(dout)
        xp = get_array_module(dout)
        padded = xp.zeros((dout.shape[0], C + h) + dout.shape[2:], dtype=dout.dtype)
        own = slice(0, C) if self.peer.rank == 0 else slice(h, C + h)
        halo = slice(C, C + h) if self.peer.rank == 0 else slice(0, h)
        padded[:, own] = dout        # the halo's outputs are the other tower's: no dout here
        dext = self.norm.backward(padded)
        dx = dext[:, own].copy()
        # dext[:, halo] is what my outputs owe the other tower's edge channels; its for mine
        got = self._swap(dext[:, halo].copy(), "backward", dout.shape[0])
        edge = slice(C - h, C) if self.peer.rank == 0 else slice(0, h)
        dx[:, edge] += got
        return dx


class TowerDropout(Dropout):
    """Dropout on tower t's columns of a layer of ``total`` features: the mask is those
    columns of the one-process layer's mask (draw number ``calls`` of ``seed``), so both
    towers together drop exactly what one process drops.  It draws the whole layer's
    numbers and keeps its columns (the draw is a few operations per unit; fc6's matrix
    product is thousands)."""

    def __init__(self, p, seed, start, total):
        super().__init__(p, seed)
        self.start, self.total = start, total

    def forward(self, x):
        self._check_input(x, 2, "(N, features)")
        if not self.training or self.p == 0.0:
            self._save(x.shape, None)
            return x
        xp = get_array_module(x)
        u = rng.uniform(xp, (x.shape[0], self.total), self.seed, self.calls, dtype=x.dtype)
        keep = u[:, self.start:self.start + x.shape[1]] >= self.p
        self.calls += 1
        self._save(x.shape, keep)
        return functional.dropout_forward(x, keep, self.p)

    def backward(self, dout):
        (keep,) = self._saved(dout)
        if keep is None:
            return dout
        return fast.dropout_backward(dout, keep, self.p)


# --------------------------------------------------------------------- one rank's tower

def _half_conv(layer, reads_all):
    """Tower half of a Conv2d: half the output channels; all input channels (``reads_all``,
    groups=1) or its own group's (groups=2), so groups=1 in the tower."""
    in_channels = layer.in_channels if reads_all else layer.in_channels // TOWERS
    half = Conv2d(in_channels, layer.out_channels // TOWERS, layer.kernel_size, layer.stride,
                  layer.padding, draw=False)
    for key in ("fast", "input_grad", "cache_cols", "use_winograd"):
        setattr(half, key, getattr(layer, key))
    return half


def _half_linear(layer):
    half = Linear(layer.in_features, layer.out_features // TOWERS, draw=False)
    half.fast = layer.fast
    return half


class Towers(Sequential):
    """One rank's tower of a one-process grouped model (see the module's docstring)."""

    def __init__(self, model, peer, name="model"):
        check_towers(model, name)
        self.peer, self.rank = peer, peer.rank
        layers, split, width = [("input", SharedInput(peer))], False, None
        for lname, layer in model.layers.items():
            if isinstance(layer, Conv2d):
                if layer.groups == TOWERS and not split:
                    raise ConfigError(f"--model-parallel: {name}'s {lname} is grouped but reads "
                                      "a layer both towers hold whole")
                if layer.groups == 1 and split:          # reads both towers: a crossing
                    layers.append((f"to_{lname}", Gather(peer)))
                layers.append((lname, _half_conv(layer, reads_all=layer.groups == 1)))
                split, width = True, layer.out_channels
            elif isinstance(layer, Linear):
                if split:
                    layers.append((f"to_{lname}", Gather(peer)))
                layers.append((lname, _half_linear(layer)))
                split, width = True, layer.out_features
            elif isinstance(layer, LocalResponseNorm) and split:
                layers.append((lname, HaloLRN(peer, layer)))
            elif isinstance(layer, Dropout) and split:
                rows = tower_rows(width, self.rank)
                drop = TowerDropout(layer.p, layer.seed, rows.start, width)
                drop.calls, drop.fast = layer.calls, layer.fast
                layers.append((lname, drop))
            else:                                         # per channel: ReLU, pools, flatten
                layers.append((lname, copy.deepcopy(layer)))
        if split:
            layers.append(("logits", GatherOutput(peer)))
        super().__init__(layers)
        self.input_shape = getattr(model, "input_shape", None)
        self.training = model.training
        self.train(model.training)
        self.load_state_dict(split_state(model.state_dict())[self.rank])
        first = next(iter(model.state_dict().values()))
        self.to(backend.backend_of(first), dtype=first.dtype)

    # ---------------------------------------------------------------- the crossings
    def exchanges(self):
        """``[(name, Exchange), ...]`` in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, Exchange)]

    def reset_traffic(self):
        for _, m in self.exchanges():
            m.reset_traffic()

    def traffic(self):
        """``{name: {"forward": bytes per image, "backward": ..., "seconds": s}}`` sent by this
        rank since ``reset_traffic``."""
        out = {}
        for n, m in self.exchanges():
            out[n] = {d: (m.sent[d] / m.images[d] if m.images[d] else 0.0)
                      for d in ("forward", "backward")}
            out[n]["seconds"] = m.seconds
        return out

    # ---------------------------------------------------------------- the whole model
    def joined_state_dict(self):
        """The one-process model's state (``towers.join_state`` of both towers' halves).
        Collective: both ranks call it, both get it."""
        return join_state(self._both(self.state_dict()))

    def joined_grads(self):
        """``{name: gradient}`` of the one-process model (collective, as above)."""
        return join_state(self._both({n: g for n, _, g in self.named_parameters()}))

    def joined_optimizer_state(self, optimizer):
        """``optimizer.state_dict()`` of the one-process model (collective, as above)."""
        sd = optimizer.state_dict()
        return dict(sd, state=join_state(self._both(sd["state"])))

    def load_joined(self, state):
        """Load this rank's half of a one-process state dict."""
        self.load_state_dict(split_state(state)[self.rank])

    def _both(self, halves):
        """[tower 0's dict, tower 1's dict] from this rank's dict: one swap of all its arrays
        laid end to end (the layout is the same on both towers)."""
        if not halves:                # an optimizer before its first step: nothing yet
            return [{}, {}]
        xp = get_array_module(next(iter(halves.values())))
        names = list(halves)          # the same order on both towers
        flat = xp.concatenate([halves[n].reshape(-1) for n in names])
        got, other, offset = self.peer.swap(flat), {}, 0
        for n in names:
            size = halves[n].size
            other[n] = got[offset:offset + size].reshape(halves[n].shape)
            offset += size
        return [halves, other] if self.rank == 0 else [other, halves]


    # ---------------------------------------------------------------- checkpoints
    def whole(self, optimizer=None):
        """(model, optimizer) as a checkpoint writes them: the one-process state, gathered now
        (collective: both ranks call it, then only rank 0 need write).  See WholeModel."""
        model = WholeModel(self, self.joined_state_dict())
        if optimizer is None:
            return model, None
        return model, whole_optimizer(self, optimizer, self.joined_optimizer_state(optimizer))


class WholeModel:
    """The one-process model the two towers are, as ``checkpoint`` reads and writes it (names,
    shapes, dropout counters): ``state_dict()`` the joined state (the one given, else
    gathered: collective), ``load_state_dict`` keeps this rank's half."""

    def __init__(self, towers, state=None):
        self.towers, self.state = towers, state
        self.input_shape = towers.input_shape

    def state_dict(self):
        return self.state if self.state is not None else self.towers.joined_state_dict()

    def load_state_dict(self, state, strict=True):
        self.towers.load_joined(state)
        return self

    def named_parameters(self):
        return self.towers.named_parameters()      # the same names as the one-process model's

    def get_extra_state(self):
        return self.towers.get_extra_state()

    def set_extra_state(self, state):
        self.towers.set_extra_state(state)


def whole_optimizer(towers, optimizer, state=None):
    """``optimizer`` seen as the one-process model's (same class, numbers and step count):
    ``state_dict()`` joins the towers' slots (the one given, else gathered: collective),
    ``load_state_dict`` keeps this rank's half of each."""
    view = copy.copy(optimizer)
    view.model = WholeModel(towers)

    def state_dict():
        return state if state is not None else towers.joined_optimizer_state(optimizer)

    def load_state_dict(sd):
        optimizer.load_state_dict(dict(sd, state=split_state(sd["state"])[towers.rank]))
        return view
    view.state_dict, view.load_state_dict = state_dict, load_state_dict
    return view


# --------------------------------------------------------------------- the Trainer's hooks

class ModelParallel(DataParallel):
    """The Trainer's hooks (``parallel/strategy.py``) for the two towers over a World of 2.

    Both ranks read the whole of every batch (the same images, augmentation, labels) and
    compute the same loss; the exchanges are inside the model.  From DataParallel: rank 0
    writes the run folder, the others read it; stops are agreed on (here by a note per step,
    the gradients needing no all-reduce); a failure on one rank stops both."""

    def __init__(self, world):
        super().__init__(world)
        self.peer = Peer(world)              # refuses any other number of processes
        self.evaluate_world = None           # both towers score every image, together

    def describe(self):
        return (", the paper's two towers on 2 processes (model parallel: the parameters above "
                "are one tower's)")

    def check(self, config, n_train):
        pass                                 # the whole batch on both: any size will do

    def shard_batches(self, batches):
        return batches

    def begin_step(self, model, total):
        return None

    def wrap_model(self, model, name):
        return Towers(model, self.peer, name)

    def average_gradients(self, model, part):
        """Nothing to average (each tower's gradients are its own parameters' whole ones);
        the step's stop notes still go round."""
        signum = self.stops.requested() if self.stops is not None else 0
        self.agreed = int(self.world.exchange("agreeing on a stop", note=signum).max())

    def total(self, values):
        return values                        # both ranks counted the same images

    def whole(self, model, optimizer):
        return model.whole(optimizer)
