"""Gradient checking: is a hand-written backward pass right?

A backward pass computes dL/dx by the chain rule.  Calculus gives a slow but
independent way to get the same numbers: nudge one input by +h and by -h and
see how the loss changes (central differences)::

    dL/dx[i]  ~  (L(x + h e_i) - L(x - h e_i)) / (2h)          error O(h^2)

For a layer, we pick a random ``dout`` and use L = sum(forward(x) * dout), whose
gradient with respect to x is exactly what ``backward(dout)`` must return.

The two are compared by their relative error::

    rel_error(a, b) = max|a - b| / max(eps, max|a| + max|b|)

the largest disagreement measured against the size of the gradients.  In
float64 with h = 1e-6, a correct smooth layer gives 1e-8 or less.  Around
1e-5..1e-4 suspect a kink (ReLU at 0, a tie in max pooling) or float32;
above 1e-2 the backward pass is wrong.  Always check in float64.

``check_model`` checks a whole network with its loss at a random sample of the
entries of the input and of every parameter: the full check of 367,242 weights
would take hours, a sample of each tensor takes seconds.
"""
from dataclasses import dataclass, field

from .backend import get_array_module, numpy as np


def rel_error(a, b, eps=1e-12):
    """max|a - b| / max(eps, max|a| + max|b|): 0 when equal, about 1 when unrelated."""
    xp = get_array_module(a, b)
    a, b = xp.asarray(a, dtype="float64"), xp.asarray(b, dtype="float64")
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    num = float(xp.abs(a - b).max())
    den = float(xp.abs(a).max() + xp.abs(b).max())
    return num / max(eps, den)


def numerical_gradient(f, x, h=1e-6, indices=None):
    """d f() / d x by central differences, where ``f`` reads ``x`` and returns a number.

    ``x`` is changed in place, one element at a time, and restored.  With
    ``indices`` (flat positions in ``x``), only those entries are computed, and
    they come back as a 1-d array in that order: for a model with hundreds of
    thousands of weights, checking a random sample is what fits in a minute.
    """
    xp = get_array_module(x)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous array to perturb in place")
    flat_x = x.reshape(-1)  # a view of x
    positions = range(x.size) if indices is None else [int(i) for i in indices]
    flat_g = xp.zeros(len(positions), dtype="float64")
    for k, i in enumerate(positions):
        old = flat_x[i].item()
        flat_x[i] = old + h
        plus = float(f())
        flat_x[i] = old - h
        minus = float(f())
        flat_x[i] = old
        flat_g[k] = (plus - minus) / (2 * h)
    return flat_g.reshape(x.shape) if indices is None else flat_g


@dataclass
class GradCheckResult:
    """Relative error per checked tensor, the bound, and whether each passed."""
    errors: dict = field(default_factory=dict)
    bound: float = 1e-6
    label: str = ""

    @property
    def passed(self):
        return all(e <= self.bound for e in self.errors.values())

    def __bool__(self):
        return self.passed

    def __str__(self):
        lines = [f"gradient check{' of ' + self.label if self.label else ''} (bound {self.bound:.0e})"]
        for name, e in self.errors.items():
            lines.append(f"  {name:<12} rel. error {e:.2e}  {'ok' if e <= self.bound else 'FAIL'}")
        lines.append("  PASS" if self.passed else "  FAIL")
        return "\n".join(lines)


def check_layer(layer, x, dout=None, bound=1e-6, h=1e-6, seed=0, params=True):
    """Gradient-check ``layer`` at input ``x``: dx and every parameter's gradient.

    ``layer`` is any Module (a layer, or a whole Sequential model); use float64
    arrays.  Returns a :class:`GradCheckResult` (truthy when every error is
    within ``bound``).  State that changes between forward calls (dropout's
    mask counter) is restored before each call, so every evaluation sees the
    same function.
    """
    xp = get_array_module(x)
    x = xp.array(x, copy=True)
    saved = layer.get_extra_state()

    def forward():
        layer.set_extra_state(saved) if saved is not None else None
        return layer.forward(x)

    out = forward()
    if dout is None:
        dout = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    dout = dout.astype(out.dtype)
    dx = layer.backward(dout)

    def loss():
        return (forward() * dout).sum()

    result = GradCheckResult(bound=bound, label=layer.label())
    if dx is not None:
        result.errors["x"] = rel_error(dx, numerical_gradient(loss, x, h))
    if params:
        analytic = {name: g.copy() for name, _, g in layer.named_parameters()}
        for name, p, _ in layer.named_parameters():
            result.errors[name] = rel_error(analytic[name], numerical_gradient(loss, p, h))
    forward()  # leave the layer's cache as it was after the first call
    return result


def check_loss(loss_layer, logits, labels, bound=1e-6, h=1e-6):
    """Gradient-check a loss layer's d loss / d logits at (logits, labels)."""
    xp = get_array_module(logits)
    logits = xp.array(logits, copy=True)
    loss_layer.forward(logits, labels)
    analytic = loss_layer.backward()
    numeric = numerical_gradient(lambda: loss_layer.forward(logits, labels), logits, h)
    return GradCheckResult(errors={"logits": rel_error(analytic, numeric)}, bound=bound,
                           label=loss_layer.label())


def check_function(forward, backward, inputs, bound=1e-6, h=1e-6, seed=0):
    """Gradient-check a pair of plain functions (the lessons' exercises use this).

    ``forward(*inputs) -> out`` and ``backward(dout) -> tuple of gradients``,
    one per input (``None`` for an input that has no gradient).
    """
    xp = get_array_module(*inputs)
    inputs = [xp.array(a, copy=True) for a in inputs]
    out = forward(*inputs)
    dout = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape)).astype(out.dtype)
    grads = backward(dout)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    result = GradCheckResult(bound=bound, label=getattr(forward, "__name__", ""))
    for k, (a, g) in enumerate(zip(inputs, grads)):
        if g is None:
            continue
        numeric = numerical_gradient(lambda: (forward(*inputs) * dout).sum(), a, h)
        result.errors[f"input {k}"] = rel_error(g, numeric)
    return result


def check_model(model, loss_layer, x, labels, samples=20, bound=1e-6, h=1e-6, seed=0):
    """Gradient-check a whole network with its loss: d loss / d (input, every parameter).

    One forward and backward pass gives the analytic gradients; central
    differences of the loss then check ``samples`` randomly chosen entries of
    the input and of each parameter (all of them where a tensor is smaller).
    Use float64 (``model.to(dtype="float64")``).  The input is checked only if
    the model returns dx (the models' conv1 has ``input_grad = False``; set it
    True to include x).  Dropout draws the same masks at every evaluation, as
    in :func:`check_layer`.  Returns a :class:`GradCheckResult`.
    """
    xp = get_array_module(x)
    x = xp.array(x, copy=True)
    saved = model.get_extra_state()

    def loss():
        model.set_extra_state(saved) if saved is not None else None
        return loss_layer.forward(model.forward(x), labels)

    loss()
    dx = model.backward(loss_layer.backward())
    tensors = [] if dx is None else [("x", x, dx)]
    tensors += [(name, p, g.copy()) for name, p, g in model.named_parameters()]
    rng = np.random.default_rng(seed)
    result = GradCheckResult(bound=bound, label=f"{model.label()} + {loss_layer.label()}")
    for name, array, analytic in tensors:
        picked = rng.choice(array.size, size=min(samples, array.size), replace=False)
        numeric = numerical_gradient(loss, array, h, indices=picked)
        result.errors[name] = rel_error(analytic.reshape(-1)[xp.asarray(picked)], numeric)
    loss()  # leave the caches as after the first call
    return result


__all__ = ["rel_error", "numerical_gradient", "check_layer", "check_loss", "check_function",
           "check_model", "GradCheckResult"]
