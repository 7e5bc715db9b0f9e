"""The same network in PyTorch: the benchmark's comparison and the tests' cross-check.

PyTorch is optional: tinyalexnet never needs it, and this is the one module of
the package that imports it, lazily, when a function here is called
(``import_torch`` says in one line when it is missing).  ``bench --compare
torch`` and ``tests/test_torch_crosscheck.py`` both use it.

* ``to_torch(model)``: a ``torch.nn.Sequential`` with the same layers, names
  and weights.  Our layouts are PyTorch's, so the arrays copy over as they are;
  two settings do not: PyTorch's ``LocalResponseNorm`` divides alpha by the
  window size (the paper does not), so its alpha is ours times size, and
  ``ReLU(inplace=True)`` is used as torchvision's AlexNet does.
* ``TorchRunner``: a training step of that network with ``torch.optim.SGD``,
  on the CPU or CUDA, for the benchmark to time beside ours.
* ``check_outputs``: do the two compute the same thing?  See its docstring for
  what is compared, in which dtype, and the tolerances.
"""
from collections import OrderedDict

from . import backend
from .errors import TinyAlexNetError
from .gradcheck import rel_error
from .layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                     ZeroPad2d)

# Agreement demanded of PyTorch, as gradcheck.rel_error per tensor (the worst tensor
# counts).  float32 sums taken in another order differ by ~1e-6.
TOLERANCE = {"float32": {"output": 1e-4},
             "float64": {"output": 1e-10, "grad": 1e-8}}
# With TF32 on, each product rounds its operands to 11 significant bits (~5e-4), and
# the two frameworks round different sums: 1e-2 still catches a wrong computation.
TF32_OUTPUT_TOLERANCE = 1e-2


def import_torch(who="this"):
    """The ``torch`` module, or a one-line error saying that ``who`` needs it."""
    try:
        import torch
    except ImportError as err:
        raise TinyAlexNetError(f"{who} needs PyTorch, which is not installed here ({err}); "
                               "tinyalexnet itself does not") from None
    return torch


def torch_layer(layer, torch=None):
    """The ``torch.nn`` module that computes what our ``layer`` computes (weights not copied)."""
    nn = (torch or import_torch()).nn
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         stride=layer.stride, padding=layer.padding, groups=layer.groups)
    if isinstance(layer, ReLU):
        return nn.ReLU(inplace=True)          # as torchvision's AlexNet
    if isinstance(layer, LocalResponseNorm):
        # PyTorch divides alpha by size; the paper (and we) do not.
        return nn.LocalResponseNorm(layer.size, alpha=layer.alpha * layer.size,
                                    beta=layer.beta, k=layer.k)
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, ZeroPad2d):
        return nn.ZeroPad2d(layer.padding)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Linear):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    return None


def to_torch(model, torch=None):
    """A ``torch.nn.Sequential`` with the same layers, names and weights as ``model``."""
    torch = torch or import_torch()
    modules = []
    for name, layer in model.layers.items():
        m = torch_layer(layer, torch)
        if m is None:
            raise TinyAlexNetError(f"no PyTorch equivalent known for layer {name!r} "
                                   f"({type(layer).__name__})")
        modules.append((name, m))
    net = torch.nn.Sequential(OrderedDict(modules))
    # Name for name, in our dtype, so that nothing is rounded on the way.
    state = {name: torch.from_numpy(backend.as_numpy(p)) for name, p in model.state_dict().items()}
    net.to(dtype=next(iter(state.values())).dtype)
    net.load_state_dict(state)
    return net


class TorchRunner:
    """``model``'s twin in PyTorch, with the same batch and update rule, ready to time.

    ``x``, ``y``: the batch as host arrays (the benchmark gives both frameworks
    the same one).  PyTorch runs as it is usually run: ``threads`` threads (as
    many as NumPy's BLAS uses, for a fair match), ``zero_grad()`` and
    ``torch.optim.SGD``; on CUDA with ``cudnn.benchmark`` on and TF32 set
    explicitly both ways (cuDNN's own default is on).
    """

    name = "PyTorch"

    def __init__(self, model, x, y, device="cpu", dtype="float32", threads=None, tf32=False,
                 seed=0):
        torch = self.torch = import_torch("--compare torch")
        torch.manual_seed(seed)
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            if not torch.cuda.is_available():
                raise TinyAlexNetError("bench: --compare torch with --backend cupy needs a "
                                       "PyTorch built with CUDA; this one sees no GPU")
            torch.backends.cudnn.benchmark = True     # cuDNN at its best: it picks its fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.device = torch.device(device)
        self.model = to_torch(model, torch).to(device=self.device, dtype=getattr(torch, dtype))
        self.model.train()
        self.loss = torch.nn.CrossEntropyLoss()
        # torch's SGD folds lr in differently from the paper's rule; for a constant lr
        # the two give the same steps (see optim/sgd.py).
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                         weight_decay=5e-4)
        self.x = torch.from_numpy(x).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def step(self):
        self.optimizer.zero_grad()
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def eval_pass(self, dtype, n):
        """Logits, loss and every parameter gradient of one eval-mode pass over the
        first ``n`` images, computed in ``dtype``; all as NumPy arrays."""
        torch = self.torch
        own = next(self.model.parameters()).dtype
        self.model.to(dtype=getattr(torch, dtype))
        self.model.eval()
        self.optimizer.zero_grad()
        logits = self.model(self.x[:n].to(getattr(torch, dtype)))
        loss = self.loss(logits, self.y[:n])
        loss.backward()
        grads = {name: p.grad.detach().cpu().numpy() for name, p in self.model.named_parameters()}
        self.optimizer.zero_grad()
        self.model.train()
        self.model.to(dtype=own)
        return logits.detach().cpu().numpy(), float(loss.detach()), grads

    def peak_memory_gpu(self):
        """(peak bytes PyTorch's allocator handed out during one step, bytes it reserved)."""
        torch = self.torch
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        self.sync()
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def _error(a, b):
    """``rel_error``, with NaN as infinity (a NaN compares as nothing and would pass)."""
    e = rel_error(a, b)
    return e if e == e else float("inf")


def check_outputs(ours, theirs, dtype, n=8, tf32=False):
    """Does PyTorch compute what we compute?  Returns (ok, numbers, report lines).

    ``ours`` and ``theirs`` each have ``eval_pass(dtype, n)`` and a batch ``x``.
    In eval mode (dropout is the identity), with the same weights and images:
    the logits and loss of the whole batch in the benchmark's dtype, then logits,
    loss and every gradient in float64 on the first ``n`` images.  Gradients are
    compared in float64 because in float32 a pre-activation within rounding of a
    ReLU's kink, or two near-equal values in a max-pool window, can route a
    gradient differently in the two frameworks: a legitimate difference of up to
    ~1e-2 that says nothing about correctness.  In float64 both agree to ~1e-14.
    Each comparison is ``gradcheck.rel_error``, the same measure as the
    gradient checks.
    """
    batch = ours.x.shape[0]
    o_logits, o_loss, _ = ours.eval_pass(dtype, batch)
    t_logits, t_loss, _ = theirs.eval_pass(dtype, batch)
    tol = TF32_OUTPUT_TOLERANCE if tf32 and dtype == "float32" else TOLERANCE[dtype]["output"]
    out_err = max(_error(o_logits, t_logits), _error(o_loss, t_loss))
    o64 = ours.eval_pass("float64", n)
    t64 = theirs.eval_pass("float64", n)
    tol64 = TOLERANCE["float64"]
    out64 = max(_error(o64[0], t64[0]), _error(o64[1], t64[1]))
    grad_errs = {name: _error(o64[2][name], t64[2][name]) for name in o64[2]}
    worst = max(grad_errs, key=grad_errs.get)
    ok = bool(out_err <= tol and out64 <= tol64["output"] and grad_errs[worst] <= tol64["grad"])
    lines = ["output check, eval mode (error = rel_error: max|ours - PyTorch| / "
             "(max|ours| + max|PyTorch|)):",
             f"  {dtype} logits and loss, batch {batch}: {out_err:.1e} (tolerance {tol:.0e}"
             f"{', TF32' if tol == TF32_OUTPUT_TOLERANCE else ''})",
             f"  float64 logits and loss, {min(n, batch)} images: {out64:.1e} "
             f"(tolerance {tol64['output']:.0e})",
             f"  float64 gradients: worst {grad_errs[worst]:.1e} in {worst} "
             f"(tolerance {tol64['grad']:.0e})",
             f"  {'agree' if ok else 'DISAGREE: the timings below compare different computations'}"]
    numbers = {"output_error": out_err, "output_error_float64": out64,
               "grad_error_float64": grad_errs[worst], "grad_worst": worst, "ok": ok}
    return ok, numbers, lines
