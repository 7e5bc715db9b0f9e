"""Module: what every layer has in common.

A layer is a small object with two methods::

    out = layer.forward(x)        # remembers what backward will need
    dx  = layer.backward(dout)    # dL/dx from dL/dout; fills layer.grads

Parameters live in ``layer.params`` and their gradients, of the same shapes,
in ``layer.grads`` (both dicts keyed by ``"weight"`` / ``"bias"``).  Arrays a
layer keeps that are not learned by gradient descent (batch normalisation's
running averages) are *buffers*, in ``layer.buffers``: like PyTorch's, they are
in the ``state_dict`` and move with ``.to()``, and no optimizer sees them.  Unlike
PyTorch, backward *overwrites* the grads instead of adding to them, so there is
no ``zero_grad()`` to forget.

A layer's maths is in ``functional.py``; the class around it keeps the state.
The rest is bookkeeping shared by all layers: names and ``state_dict()`` as in
PyTorch, train/eval mode, moving to the GPU and back, changing dtype, and the
input checks that turn a wrong shape into a one-line ShapeError naming the
layer.  A layer checks its settings when it is built with ``check_setting``
(imported here from ``settings.py``, where every setting's range is declared):
a bad one is a ConfigError then, not a crash in the first forward.

Flat buffers.  ``model.to(...)`` also lays every parameter of the model end to end
in one contiguous 1-D array, and every gradient in another (one pair per dtype);
``layer.params[...]`` and ``layer.grads[...]`` are then views into them::

    flat_params()  [ conv1.weight | conv1.bias | conv2.weight | ... | fc8.bias ]
    flat_grads()   [ dconv1.weight | ...                                        ]

Nothing else changes (names, shapes, ``state_dict()``, checkpoints), but whatever
treats all parameters alike can now do it in one array operation: the optimizers
update the whole model with a handful of operations (one kernel each on a GPU)
instead of a dozen per parameter, and a data-parallel all-reduce sums one buffer.
"""
import copy
from collections import OrderedDict, namedtuple

from .. import backend
from ..errors import NonFiniteError, ShapeError, StateError
from ..settings import check_setting  # noqa: F401  (the layers' validator, declared in settings.py)


# One flat pair: ``params`` and ``grads`` (1-D, one dtype, on one backend) and where each
# parameter lies in them: ``layout`` = ((name, offset, shape), ...) in named_parameters() order.
FlatBuffer = namedtuple("FlatBuffer", "params grads layout")


class Module:
    """Base class of all layers and of Sequential."""

    def __init__(self):
        self.params = OrderedDict()
        self.grads = OrderedDict()
        self.buffers = OrderedDict()   # state that is not a parameter: running averages
        self.training = True
        self.name = None          # set by Sequential: "conv1", "fc6", ...
        # Reject NaN/inf inputs.  On a GPU each check reads a value back (a sync), so the
        # trainer turns it off there: set_check_finite.
        self.check_finite = True
        self._cache = None        # what forward saved for backward
        self._flat = None         # flat buffers (flatten_parameters) and their views

    # ------------------------------------------------------------------ the two passes
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ shapes
    def output_shape(self, input_shape):
        """Shape of one sample's output for one sample's input shape (no batch axis)."""
        return tuple(input_shape)

    def macs(self, input_shape):
        """Multiply-adds of the forward pass for one sample."""
        return 0

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------ parameters
    def register_parameter(self, name, value):
        """Add parameter ``name`` with the array ``value``, and a gradient of zeros beside it."""
        self.params[name] = value
        self.grads[name] = backend.get_array_module(value).zeros_like(value)

    def register_buffer(self, name, value):
        """Add buffer ``name``: saved in the state_dict and moved by ``.to()``, never trained."""
        self.buffers[name] = value

    def children(self):
        """(name, module) pairs of direct sub-modules; layers have none."""
        return iter(())

    def named_modules(self, prefix=""):
        """Yield ``(name, module)`` for this module and every module inside it."""
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(prefix + "." + name if prefix else name)

    def get_extra_state(self):
        """State that is not a parameter but must survive a checkpoint (dropout's counter)."""
        return None

    def set_extra_state(self, state):
        pass

    def set_check_finite(self, flag):
        """Turn the NaN/inf input check on or off here and in every sub-module."""
        for _, m in self.named_modules():
            m.check_finite = flag
        return self

    def set_fast(self, flag):
        """Run the fast versions of fast.py (True, the default) or the readable functions of
        functional.py (False) in every sub-module that has both (Conv2d, MaxPool2d,
        LocalResponseNorm, ReLU, Dropout, Linear)."""
        for _, m in self.named_modules():
            if hasattr(m, "fast"):
                m.fast = flag
        return self

    def named_parameters(self, prefix=""):
        """Yield ``(name, param, grad)`` for every parameter, e.g. ``("conv1.weight", W, dW)``."""
        for key, p in self.params.items():
            yield prefix + key, p, self.grads[key]
        for name, child in self.children():
            yield from child.named_parameters(prefix + name + ".")

    def num_parameters(self):
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    def named_buffers(self, prefix=""):
        """Yield ``(name, buffer)`` for every buffer, e.g. ``("bn1.running_mean", array)``."""
        for key, b in self.buffers.items():
            yield prefix + key, b
        for name, child in self.children():
            yield from child.named_buffers(prefix + name + ".")

    def state_dict(self):
        """Ordered ``{name: array}`` of all parameters and buffers (the arrays themselves, not
        copies), in PyTorch's order: each module's parameters, then its buffers, then its
        children's."""
        state = OrderedDict(self.params)
        state.update(self.buffers)
        for name, child in self.children():
            state.update((f"{name}.{key}", a) for key, a in child.state_dict().items())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters, in place, checking names and shapes.

        Values may be NumPy or CuPy arrays of any float dtype; each is converted
        to the backend and dtype of the parameter it fills.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ShapeError(f"{self.label()}: state_dict does not match the model: "
                             f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
        for key, p in own.items():
            if key not in state:
                continue
            value = state[key]
            if not backend.is_array(value):
                value = backend.numpy.asarray(value)
            if tuple(value.shape) != tuple(p.shape):
                raise ShapeError(f"{self.label()}: parameter {key!r} has shape {tuple(p.shape)} "
                                 f"in the model but {tuple(value.shape)} in the state_dict")
            p[...] = backend.to_backend(value, backend.backend_of(p)).astype(p.dtype, copy=False)
        return self

    # ------------------------------------------------------------------ devices and dtypes
    def to(self, backend_name=None, dtype=None):
        """Move parameters (and buffers) to ``"numpy"`` or ``"cupy"`` and/or cast them to
        ``dtype``; then lay the parameters (and their gradients) in flat buffers, see
        ``flatten_parameters``."""
        for _, m in self.named_modules():
            for key in list(m.params):
                for store in (m.params, m.grads):
                    a = store[key]
                    if backend_name is not None:
                        a = backend.to_backend(a, backend_name)
                    if dtype is not None:
                        a = a.astype(dtype, copy=False)
                    store[key] = a
            for key, b in m.buffers.items():
                if backend_name is not None:
                    b = backend.to_backend(b, backend_name)
                if dtype is not None and b.dtype.kind == "f":      # a count stays an integer
                    b = b.astype(dtype, copy=False)
                m.buffers[key] = b
            m._cache = None
        if self.flat_buffers() is None:          # still valid if nothing moved
            self.flatten_parameters()
        return self

    def to_gpu(self):
        return self.to("cupy")

    def to_cpu(self):
        return self.to("numpy")

    # ------------------------------------------------------------------ flat buffers
    def flatten_parameters(self):
        """Copy every parameter into one contiguous 1-D buffer per dtype, every gradient into
        another, and make ``params[...]`` / ``grads[...]`` views into them (values unchanged).

        ``to()`` does this; call it yourself after building a model on the host if you want
        the flat buffers without moving it.  Returns the list of ``FlatBuffer``.
        """
        entries = []                             # (name, module, key), named_parameters() order
        modules = [m for _, m in self.named_modules()]
        for name, m in self.named_modules():
            m._flat = None
            for key in m.params:
                entries.append((name + "." + key if name else key, m, key))
        groups = OrderedDict()                   # (backend, dtype) -> entries
        for entry in entries:
            p = entry[1].params[entry[2]]
            groups.setdefault((backend.backend_of(p), p.dtype), []).append(entry)
        buffers, views = [], []
        for (_, dtype), members in groups.items():
            xp = backend.get_array_module(members[0][1].params[members[0][2]])
            total = sum(int(m.params[key].size) for _, m, key in members)
            params, grads = xp.empty(total, dtype=dtype), xp.empty(total, dtype=dtype)
            layout, offset = [], 0
            for name, m, key in members:
                p, g = m.params[key], m.grads[key]
                n, shape = int(p.size), tuple(p.shape)
                params[offset:offset + n] = p.reshape(-1)
                grads[offset:offset + n] = g.reshape(-1)
                m.params[key] = params[offset:offset + n].reshape(shape)
                m.grads[key] = grads[offset:offset + n].reshape(shape)
                views.append((m, key, m.params[key], m.grads[key]))
                layout.append((name, offset, shape))
                offset += n
            buffers.append(FlatBuffer(params, grads, tuple(layout)))
        self._flat = (buffers, views, modules, len(entries))
        return buffers

    def flat_buffers(self):
        """The ``FlatBuffer`` list (one per dtype) of ``flatten_parameters``, or None when there
        is none, or a parameter or gradient was since replaced (not written in place) or added:
        then the buffers no longer hold the model, and a new ``to()`` makes new ones."""
        if getattr(self, "_flat", None) is None:    # (a Module whose __init__ skipped ours)
            return None
        buffers, views, modules, count = self._flat
        for m, key, p, g in views:
            if m.params.get(key) is not p or m.grads.get(key) is not g:
                return None
        if sum(len(m.params) for m in modules) != count:
            return None
        return buffers

    def _one_flat_buffer(self):
        buffers = self.flat_buffers()
        if buffers is None:
            return None
        if len(buffers) != 1:
            raise StateError(f"{self.label()}: parameters of {len(buffers)} dtypes "
                             f"({', '.join(str(b.params.dtype) for b in buffers)}): use "
                             "flat_buffers(), one buffer per dtype")
        return buffers[0]

    def flat_params(self):
        """Every parameter of the model in one 1-D array, in ``named_parameters()`` order
        (``flat_layout()`` says where each lies); writing into it writes the parameters.
        None before ``to()`` / ``flatten_parameters()``, or once a parameter was replaced."""
        buffer = self._one_flat_buffer()
        return None if buffer is None else buffer.params

    def flat_grads(self):
        """Every gradient in one 1-D array, laid out as ``flat_params()``: backward fills it,
        so after ``model.backward(...)`` it is the whole gradient (what an all-reduce sums)."""
        buffer = self._one_flat_buffer()
        return None if buffer is None else buffer.grads

    def flat_layout(self):
        """``((name, offset, shape), ...)``: where each parameter lies in the flat buffers."""
        buffer = self._one_flat_buffer()
        return None if buffer is None else buffer.layout

    def __deepcopy__(self, memo):
        # The copy's arrays are separate copies, no longer views of one buffer: copy
        # everything but the flat buffers, then lay the copy out afresh.
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, None if key == "_flat" else copy.deepcopy(value, memo))
        if self.flat_buffers() is not None:
            new.flatten_parameters()
        return new

    @property
    def xp(self):
        """The array module the parameters live on (numpy for parameter-free layers)."""
        for _, p, _ in self.named_parameters():
            return backend.get_array_module(p)
        return backend.numpy

    # ------------------------------------------------------------------ messages and checks
    def label(self):
        """``"Conv2d 'conv1'"``: how error messages name this layer."""
        kind = type(self).__name__
        return f"{kind} {self.name!r}" if self.name else kind

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _check_input(self, x, ndim=None, layout="(N, ...)", channels=None, what="channels"):
        """Raise a ShapeError naming this layer unless ``x`` is a float array of rank ``ndim``.

        ``layout`` spells the expected axes for the message, e.g. "(N, C, H, W)";
        ``ndim=None`` accepts any rank of at least 1.  ``channels``, if given, is the
        size axis 1 must have (``what`` names it in the message: "channels", "features").
        """
        if not backend.is_array(x):
            raise ShapeError(f"{self.label()}: expected an array {layout}, got {type(x).__name__}")
        if (ndim is not None and x.ndim != ndim) or x.ndim == 0:
            rank = f"a {ndim}-d array" if ndim else "an array with a batch axis"
            raise ShapeError(f"{self.label()}: expected {rank} {layout}, got shape {tuple(x.shape)}")
        if x.dtype.kind != "f":
            raise ShapeError(f"{self.label()}: expected a floating-point array, got dtype {x.dtype}")
        if channels is not None and x.shape[1] != channels:
            raise ShapeError(f"{self.label()}: expected {channels} {what} on axis 1 of {layout}, "
                             f"got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ShapeError(f"{self.label()}: got an empty batch, shape {tuple(x.shape)}")
        if self.check_finite:
            xp = backend.get_array_module(x)
            if not bool(xp.isfinite(x).all()):
                raise NonFiniteError(f"{self.label()}: input contains NaN or infinity "
                                     f"(shape {tuple(x.shape)})")

    def _save(self, out_shape, *arrays):
        """Keep what backward needs, and the output's shape to check ``dout`` against."""
        self._cache = (tuple(out_shape),) + arrays

    def _saved(self, dout):
        """The tuple of what forward saved, after checking that ``dout`` has the output's shape."""
        if self._cache is None:
            raise StateError(f"{self.label()}: backward() called before forward()")
        out_shape, *arrays = self._cache
        if not backend.is_array(dout) or tuple(dout.shape) != out_shape:
            got = tuple(dout.shape) if backend.is_array(dout) else type(dout).__name__
            raise ShapeError(f"{self.label()}: backward expected dout of shape {out_shape}, got {got}")
        return tuple(arrays)
