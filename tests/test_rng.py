"""Counter-based random numbers (tinyalexnet.rng) and the dropout masks drawn from them.

Statistical bounds are four standard errors: a correct generator fails one of
them with probability ~1e-4, and the draws are fixed by their seeds anyway.
"""
import numpy as np
import pytest

from tinyalexnet import rng
from tinyalexnet.backend import as_numpy
from tinyalexnet.layers import Dropout

N = 100_000


def test_same_seed_and_counter_same_numbers(xp):
    a = rng.uniform(xp, (1000,), seed=3, counter=7)
    np.testing.assert_array_equal(as_numpy(a), as_numpy(rng.uniform(xp, (1000,), 3, 7)))


def test_numbers_depend_only_on_position():
    # Element i is a function of (seed, counter, i): the shape only arranges them.
    flat = rng.uniform(np, (200,), 1, 2)
    np.testing.assert_array_equal(rng.uniform(np, (10, 20), 1, 2), flat.reshape(10, 20))
    np.testing.assert_array_equal(rng.uniform(np, (50,), 1, 2), flat[:50])


def test_backends_draw_identical_numbers(xp):
    """On CuPy this checks that the GPU reproduces the CPU's masks bit for bit."""
    for dtype in ("float32", "float64"):
        np.testing.assert_array_equal(as_numpy(rng.uniform(xp, (3, 1000), 11, 5, dtype=dtype)),
                                      rng.uniform(np, (3, 1000), 11, 5, dtype=dtype))


@pytest.mark.parametrize("other", [dict(seed=3, counter=8), dict(seed=4, counter=7),
                                   dict(seed=2 ** 32 - 1, counter=7)])
def test_other_seeds_or_counters_give_other_numbers(other):
    a = rng.uniform(np, (N,), 3, 7, dtype="float64")
    b = rng.uniform(np, (N,), other["seed"], other["counter"], dtype="float64")
    assert (a == b).mean() < 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(N)


@pytest.mark.parametrize("seed,counter", [(0, 0), (1, 0), (0, 1), (12345, 678), (2 ** 31, 2 ** 20)])
def test_uniform_statistics(seed, counter):
    u = rng.uniform(np, (N,), seed, counter, dtype="float64")
    assert u.min() >= 0.0 and u.max() < 1.0
    se_mean = np.sqrt(1 / 12 / N)
    se_var = np.sqrt((1 / 80 - 1 / 144) / N)             # Var of a sample variance of U(0, 1)
    assert abs(u.mean() - 0.5) < 4 * se_mean
    assert abs(u.var() - 1 / 12) < 4 * se_var
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    chi2 = ((counts - N / 20) ** 2 / (N / 20)).sum()
    assert chi2 < 50                                      # 19 d.o.f.: P(chi2 > 50) ~ 1e-4
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(N)   # neighbours independent


def test_float32_values_are_exact_multiples():
    u = rng.uniform(np, (N,), 9, 9, dtype="float32")
    assert u.dtype == np.float32 and u.max() < 1.0
    k = u.astype(np.float64) * 2 ** 24                    # k / 2^24 exactly: never rounds to 1
    np.testing.assert_array_equal(k, np.round(k))


# --------------------------------------------------------------------------- dropout masks
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_a_fraction_near_one_minus_p(xp, p):
    layer = Dropout(p, seed=1)
    out = as_numpy(layer.forward(xp.ones((10, N // 10), dtype="float32")))
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / N)
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)   # survivors scaled up
    assert abs(out.mean() - 1.0) < 4 * np.sqrt(p / (1 - p) / N)      # mean kept on average


def test_dropout_same_extra_state_same_mask(xp):
    x = xp.ones((4, 50))
    layer = Dropout(0.5, seed=2)
    state = layer.get_extra_state()
    first = as_numpy(layer.forward(x))
    second = as_numpy(layer.forward(x))
    assert not np.array_equal(first, second)              # a new mask every call
    assert layer.get_extra_state() == {"seed": 2, "calls": 2}
    layer.set_extra_state(state)
    np.testing.assert_array_equal(as_numpy(layer.forward(x)), first)
    other = Dropout(0.5, seed=2)                          # a new layer with the same seed
    np.testing.assert_array_equal(as_numpy(other.forward(x)), first)
    assert not np.array_equal(as_numpy(Dropout(0.5, seed=3).forward(x)), first)


def test_dropout_eval_and_p0_draw_nothing(xp):
    x = xp.ones((2, 8))
    layer = Dropout(0.5, seed=1).eval()
    np.testing.assert_array_equal(as_numpy(layer.forward(x)), as_numpy(x))
    assert layer.calls == 0                               # evaluation does not use up masks
    zero = Dropout(0.0)
    np.testing.assert_array_equal(as_numpy(zero.forward(x)), as_numpy(x))
    assert zero.calls == 0


def test_dropout_backward_uses_the_forward_mask(xp):
    layer = Dropout(0.3, seed=4)
    x = xp.asarray(np.random.default_rng(0).standard_normal((6, 40)))
    out = as_numpy(layer.forward(x))
    dx = as_numpy(layer.backward(xp.ones_like(x)))
    np.testing.assert_array_equal(dx == 0, out == 0)
    np.testing.assert_allclose(dx[dx != 0], 1 / 0.7, rtol=1e-15)


@pytest.mark.parametrize("offset", [1, 37, 2 ** 32 - 5])
def test_an_offset_draws_the_slice_of_a_larger_draw(xp, offset):
    """Elements offset .. offset + n of one draw: what a process holding part of a batch needs."""
    part = as_numpy(rng.uniform(xp, (3, 4), 5, 8, offset=offset)).reshape(-1)
    if offset < 100:
        whole = as_numpy(rng.uniform(xp, (offset + 12,), 5, 8))
        np.testing.assert_array_equal(part, whole[offset:])
    else:                    # the numbering wraps at 2^32: elements 2^32 - 5 .. 2^32 + 6
        head = as_numpy(rng.uniform(np, (2 ** 32 - offset,), 5, 8, offset=offset))
        np.testing.assert_array_equal(part[:head.size], head)
        np.testing.assert_array_equal(part[head.size:],
                                      as_numpy(rng.uniform(np, (12 - head.size,), 5, 8)))
    assert not np.array_equal(part, as_numpy(rng.uniform(xp, (12,), 5, 8)))
