"""Parameters by name, state_dict / load_state_dict, to(), dtypes, extra state, summary."""
import copy
import io

import numpy as np
import pytest

from tinyalexnet.backend import as_numpy, get_array_module
from tinyalexnet.errors import ShapeError, StateError
from tinyalexnet.layers import Conv2d, Dropout, Linear, ReLU, Sequential
from tinyalexnet.models import alexnet_small

SMALL_KEYS = [f"{layer}.{p}" for layer in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                           "fc6", "fc7", "fc8") for p in ("weight", "bias")]


def test_state_dict_keys_are_pytorch_like():
    model = alexnet_small()
    sd = model.state_dict()
    assert list(sd) == SMALL_KEYS
    assert [name for name, _, _ in model.named_parameters()] == SMALL_KEYS
    assert sd["conv1.weight"] is model["conv1"].params["weight"]    # the arrays, not copies
    assert sd["fc6.weight"].shape == (256, 576)                     # (out, in), as in PyTorch
    assert sd["conv2.weight"].shape == (64, 16, 5, 5)               # (out, in / groups, kh, kw)
    assert Linear(3, 2).state_dict().keys() == {"weight", "bias"}


def test_nested_sequential_names():
    inner = Sequential([("conv", Conv2d(1, 2, 3)), ("relu", ReLU())])
    model = Sequential([("block", inner), ("drop", Dropout(0.2))])
    assert list(model.state_dict()) == ["block.conv.weight", "block.conv.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "block", "block.conv", "block.relu", "drop"]
    assert model["block"]["conv"] is inner.layers["conv"] and model[1] is model["drop"]
    assert len(model) == 2 and list(model) == [inner, model["drop"]]
    assert model["drop"].label() == "Dropout 'drop'"
    assert "(block)" in repr(model) and "Conv2d(1, 2, kernel_size=(3, 3))" in repr(model)


def test_load_state_dict_copies_in_place(xp, backend_name):
    a, b = alexnet_small(seed=1).to(backend_name), alexnet_small(seed=2).to(backend_name)
    before = {k: p for k, p in a.state_dict().items()}               # the array objects
    source = {k: as_numpy(p).copy() for k, p in b.state_dict().items()}
    assert a.load_state_dict(source) is a
    for k, p in a.state_dict().items():
        assert p is before[k]                                        # same arrays, new values
        assert get_array_module(p) is xp and p.dtype == np.float32
        np.testing.assert_array_equal(as_numpy(p), source[k])
    source["conv1.weight"][...] = 0.0                                # a copy, not an alias
    assert float(abs(a.state_dict()["conv1.weight"]).sum()) > 0


def test_load_state_dict_casts_and_allows_partial_loads():
    model = alexnet_small()
    w = np.random.default_rng(0).standard_normal((10, 256))           # float64 into float32
    untouched = model.state_dict()["fc6.weight"].copy()
    model.load_state_dict({"fc8.weight": w}, strict=False)
    assert model["fc8"].params["weight"].dtype == np.float32
    np.testing.assert_array_equal(model["fc8"].params["weight"], w.astype(np.float32))
    np.testing.assert_array_equal(model.state_dict()["fc6.weight"], untouched)
    model.load_state_dict({"fc8.bias": [0.5] * 10}, strict=False)    # array-likes too
    assert (model["fc8"].params["bias"] == 0.5).all()


def test_state_dict_round_trip_through_npz():
    model = alexnet_small(seed=3).eval()
    buffer = io.BytesIO()
    np.savez(buffer, **model.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:
        restored = alexnet_small(seed=4).eval().load_state_dict(dict(data))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype("float32")
    np.testing.assert_array_equal(restored.forward(x), model.forward(x))


def test_to_dtype(backend_name):
    model = alexnet_small()
    reference = {k: p.copy() for k, p in model.state_dict().items()}
    model.to(backend_name, dtype="float64")
    for name, p, g in model.named_parameters():
        assert p.dtype == np.float64 and g.dtype == np.float64, name
        np.testing.assert_array_equal(as_numpy(p), reference[name].astype(np.float64))
    x = model.xp.asarray(np.random.default_rng(2).standard_normal((1, 3, 32, 32)))
    out = model.forward(x)
    model.backward(model.xp.ones_like(out))
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for _, _, g in model.named_parameters())
    model.to(dtype="float32")
    assert all(p.dtype == np.float32 for _, p, _ in model.named_parameters())
    assert model.to() is model and model.to_cpu() is model


def test_extra_state_round_trip():
    model = alexnet_small()
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype("float32")
    model.forward(x)
    state = model.get_extra_state()
    assert state == {"drop6": {"seed": model["drop6"].seed, "calls": 1},
                     "drop7": {"seed": model["drop7"].seed, "calls": 1}}
    out = model.forward(x)
    model.forward(x)
    model.set_extra_state(state)
    np.testing.assert_array_equal(model.forward(x), out)            # the same masks again
    other = alexnet_small()                                         # a resumed run
    other.set_extra_state(state)
    np.testing.assert_array_equal(other.forward(x), out)


def test_train_eval_propagate_and_return_self():
    model = alexnet_small()
    assert model.eval() is model and not model["drop6"].training
    assert model.train() is model and model["drop6"].training and model["conv1"].training


def test_summary_lists_layers_and_totals():
    model = alexnet_small()
    text = model.summary((3, 32, 32))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params", "mult-adds"]
    for name in model.layers:
        assert any(line.startswith(name + " ") for line in lines), name
    assert f"Total parameters: {model.num_parameters():,}" in text
    assert f"Multiply-adds per image (forward): {model.macs((3, 32, 32)):,}" in text
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert "32x32x32" in conv1 and f"{3 * 32 * 25 + 32:,}" in conv1
    assert model.macs((3, 32, 32)) == sum(
        layer.macs(shape) for layer, shape in _inputs(model, (3, 32, 32)))


def test_summary_defaults_to_the_models_input_shape():
    model = alexnet_small(in_channels=1)
    assert model.summary() == model.summary((1, 32, 32))
    with pytest.raises(ShapeError, match="give the input shape"):
        Sequential(ReLU()).summary()


def _inputs(model, shape):
    for layer in model:
        yield layer, shape
        shape = layer.output_shape(shape)


def test_conv_macs_count_groups():
    # conv2 of the paper: 256 kernels of 5x5x48 at 27x27 positions.
    assert Conv2d(96, 256, 5, padding=2, groups=2).macs((96, 27, 27)) == 256 * 27 * 27 * 48 * 25
    assert Linear(9216, 4096).macs((9216,)) == 9216 * 4096


@pytest.mark.parametrize("flag", [True, False])
def test_set_check_finite_reaches_every_layer(flag):
    model = alexnet_small().set_check_finite(flag)
    assert all(m.check_finite is flag for _, m in model.named_modules())


# ----------------------------------------------------------------------------- flat buffers

def test_to_lays_every_parameter_and_gradient_in_one_flat_buffer(backend_name):
    model = alexnet_small(seed=1)
    before = {k: as_numpy(p).copy() for k, p in model.state_dict().items()}
    assert model.flat_params() is None                      # built on the host, not moved
    model.to(backend_name)
    flat, grads = model.flat_params(), model.flat_grads()
    assert flat.ndim == 1 and flat.size == model.num_parameters() == grads.size
    # laid end to end in named_parameters() order
    sizes = [int(np.prod(before[k].shape)) for k in SMALL_KEYS]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    assert [(n, o, s) for n, o, s in model.flat_layout()] == \
        [(k, o, before[k].shape) for k, o in zip(SMALL_KEYS, offsets)]
    host = as_numpy(flat)
    for k, o, n in zip(SMALL_KEYS, offsets, sizes):
        np.testing.assert_array_equal(host[o:o + n].reshape(before[k].shape), before[k])
    # views: writing the buffer writes the parameters, and backward's in-place writes of a
    # gradient land in the gradient buffer
    xp = get_array_module(flat)
    flat[...] = xp.arange(flat.size, dtype=flat.dtype)
    o = offsets[SMALL_KEYS.index("fc6.bias")]
    assert float(model["fc6"].params["bias"][3]) == o + 3
    model["conv2"].grads["weight"][...] = 7.0
    o, n = offsets[SMALL_KEYS.index("conv2.weight")], sizes[SMALL_KEYS.index("conv2.weight")]
    g = as_numpy(grads)
    assert (g[o:o + n] == 7).all() and (g[:o] != 7).all() and (g[o + n:] != 7).all()
    assert list(model.state_dict()) == SMALL_KEYS           # checkpoints see the same names


def test_flat_buffers_follow_moves_and_go_stale_when_a_parameter_is_replaced():
    model = alexnet_small(seed=1).to("numpy")
    first = model.flat_params()
    model.to("numpy")                                       # nothing moved: the same buffer
    assert model.flat_params() is first
    model.to(dtype="float64")                               # moved: a new buffer, the values kept
    assert model.flat_params().dtype == np.float64
    np.testing.assert_array_equal(model.flat_params(), first)
    model["fc8"].params["bias"] = np.zeros(10)              # replaced, not written in place
    assert model.flat_params() is None and model.flat_buffers() is None
    model["fc8"].to(dtype="float32")                        # one layer of another dtype
    buffers = model.flatten_parameters()
    assert [b.params.dtype for b in buffers] == [np.float64, np.float32]
    with pytest.raises(StateError, match="2 dtypes"):
        model.flat_params()


def test_a_deep_copy_of_a_flat_model_has_buffers_of_its_own():
    model = alexnet_small(seed=1).to("numpy")
    twin = copy.deepcopy(model)
    assert twin.flat_params() is not None and twin.flat_params() is not model.flat_params()
    np.testing.assert_array_equal(twin.flat_params(), model.flat_params())
    twin.flat_params()[...] = 0
    assert float(np.abs(model["conv1"].params["weight"]).sum()) > 0
    assert float(np.abs(twin["conv1"].params["weight"]).sum()) == 0   # views of its buffer
