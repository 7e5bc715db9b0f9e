"""Bad input: each mistake raises a TinyAlexNetError whose message is one line naming
the layer, what it expected and what it got."""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.errors import (BackendUnavailable, CheckpointError, ConfigError, NonFiniteError,
                                ShapeError, StateError, TinyAlexNetError)
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                                ReLU, Sequential, SoftmaxCrossEntropy, ZeroPad2d)
from tinyalexnet.layers.naive import maxpool2d_naive
from tinyalexnet.models import alexnet_small, get_model


def _named(layer, name):
    layer.name = name
    return layer


def _raises(exc, fn, *fragments):
    """``fn()`` raises ``exc`` with a one-line message containing every fragment."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, TinyAlexNetError)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def _x(*shape, dtype="float64"):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- forward input
WRONG_INPUT = [
    # layer, input, fragments of the message
    (lambda: Conv2d(3, 4, 3), _x(3, 8, 8), ["Conv2d 'layer'", "4-d", "(N, C, H, W)", "(3, 8, 8)"]),
    (lambda: MaxPool2d(3, 2), _x(2, 3, 8), ["MaxPool2d 'layer'", "4-d", "(2, 3, 8)"]),
    (lambda: LocalResponseNorm(), _x(2, 6), ["LocalResponseNorm 'layer'", "4-d", "(2, 6)"]),
    (lambda: ZeroPad2d(1), _x(5), ["ZeroPad2d 'layer'", "4-d", "(5,)"]),
    (lambda: Linear(4, 2), _x(2, 4, 1), ["Linear 'layer'", "2-d", "(N, in_features)", "(2, 4, 1)"]),
    (lambda: ReLU(), np.float64(1.0), ["ReLU 'layer'", "expected an array"]),
    (lambda: Flatten(), _x(2, 3).tolist(), ["Flatten 'layer'", "expected an array", "list"]),
    # wrong channel count / width
    (lambda: Conv2d(3, 4, 3), _x(2, 4, 8, 8), ["Conv2d 'layer'", "3 channels", "(2, 4, 8, 8)"]),
    (lambda: Linear(5, 2), _x(2, 4), ["Linear 'layer'", "5 input features", "(2, 4)"]),
    # spatial size too small for the kernel
    (lambda: Conv2d(3, 4, 5), _x(1, 3, 4, 6), ["Conv2d 'layer'", "4x6", "5x5 kernel"]),
    (lambda: Conv2d(3, 4, (5, 2), padding=1), _x(1, 3, 2, 2),
     ["Conv2d 'layer'", "2x2", "padding 1", "5x2 kernel"]),
    (lambda: MaxPool2d(3, 2), _x(1, 1, 2, 5), ["MaxPool2d 'layer'", "2x5", "3x3 window"]),
    # not floating point, empty
    (lambda: ReLU(), np.ones((2, 3), dtype=np.int64), ["ReLU 'layer'", "floating-point", "int64"]),
    (lambda: Conv2d(3, 4, 3), _x(0, 3, 8, 8), ["Conv2d 'layer'", "empty batch", "(0, 3, 8, 8)"]),
]


@pytest.mark.parametrize("make,x,fragments", WRONG_INPUT)
def test_wrong_input(make, x, fragments):
    layer = _named(make(), "layer")
    _raises(ShapeError, lambda: layer.forward(x), *fragments)


def test_wrong_input_in_a_model_names_the_layer():
    model = alexnet_small()
    _raises(ShapeError, lambda: model.forward(_x(2, 1, 32, 32, dtype="float32")),
            "Conv2d 'conv1'", "3 channels", "(2, 1, 32, 32)")
    # 16x16 images get through every conv and pool, but leave fc6 64 features, not 576.
    _raises(ShapeError, lambda: model.forward(_x(2, 3, 16, 16, dtype="float32")),
            "Linear 'fc6'", "576 input features", "(2, 64)")
    # 8x8 images are down to 1x1 before the last pool.
    _raises(ShapeError, lambda: model.forward(_x(2, 3, 8, 8, dtype="float32")),
            "MaxPool2d 'pool5'", "1x1", "3x3 window")
    _raises(ShapeError, lambda: model.summary((3, 8, 8)), "MaxPool2d 'pool5'", "1x1")
    _raises(ShapeError, lambda: model.output_shape((1, 32, 32)), "Conv2d 'conv1'", "3 input channels")


NON_FINITE_LAYERS = [
    (lambda: Conv2d(2, 3, 3), (1, 2, 5, 5)), (lambda: ReLU(), (2, 3)),
    (lambda: LocalResponseNorm(), (1, 4, 2, 2)), (lambda: MaxPool2d(3, 2), (1, 1, 5, 5)),
    (lambda: Linear(3, 2), (2, 3)), (lambda: Dropout(), (2, 3)), (lambda: Flatten(), (2, 3, 1)),
    (lambda: ZeroPad2d(1), (1, 1, 2, 2)),
]


@pytest.mark.parametrize("make,shape", NON_FINITE_LAYERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(make, shape, bad):
    x = _x(*shape)
    x.flat[-1] = bad
    layer = _named(make(), "layer")
    _raises(NonFiniteError, lambda: layer.forward(x), "'layer'", "NaN or infinity", str(shape))


def test_non_finite_check_can_be_switched_off():
    model = Sequential(Linear(3, 2, rng=0), ReLU())
    x = _x(2, 3)
    x[0, 0] = np.nan
    model.set_check_finite(False)
    assert np.isnan(model.forward(x)[0]).all()      # passes through, no error and no sync
    model.set_check_finite(True)
    _raises(NonFiniteError, lambda: model.forward(x), "Linear '0'")


# --------------------------------------------------------------------------- labels
def test_bad_labels():
    loss = SoftmaxCrossEntropy()
    logits = _x(3, 4)
    _raises(ShapeError, lambda: loss.forward(logits, np.array([0, 1])),
            "SoftmaxCrossEntropy", "(3,)", "(3, 4)", "got (2,)")
    _raises(ShapeError, lambda: loss.forward(logits, np.array([[0], [1], [2]])), "(3,)", "(3, 1)")
    _raises(ShapeError, lambda: loss.forward(logits, np.array([0, 1, 4])),
            "SoftmaxCrossEntropy", "[0, 3]", "4 classes", "from 0 to 4")
    _raises(ShapeError, lambda: loss.forward(logits, np.array([0, -1, 2])), "[0, 3]", "from -1 to 2")
    _raises(ShapeError, lambda: loss.forward(logits, np.array([0.0, 1.0, 2.0])),
            "SoftmaxCrossEntropy", "integers", "float64")
    _raises(ShapeError, lambda: loss.forward(logits, [0, 1, 2]), "integer array", "(3,)", "list")
    _raises(ShapeError, lambda: loss.forward(_x(3), np.array([0, 1, 2])), "2-d", "(3,)")
    bad = logits.copy()
    bad[1, 2] = np.nan
    _raises(NonFiniteError, lambda: loss.forward(bad, np.array([0, 1, 2])), "SoftmaxCrossEntropy")


# --------------------------------------------------------------------------- backward
ALL_LAYERS = [
    (lambda: Conv2d(2, 3, 3, padding=1), (2, 2, 4, 4)), (lambda: ReLU(), (2, 3)),
    (lambda: LocalResponseNorm(), (1, 4, 2, 2)), (lambda: MaxPool2d(3, 2), (1, 1, 5, 5)),
    (lambda: Linear(3, 2), (2, 3)), (lambda: Dropout(), (2, 3)), (lambda: Dropout().eval(), (2, 3)),
    (lambda: Flatten(), (2, 3, 2)), (lambda: ZeroPad2d(1), (1, 1, 2, 2)),
    (lambda: Sequential(Linear(3, 2), ReLU()), (2, 3)),
]


@pytest.mark.parametrize("make,shape", ALL_LAYERS)
def test_backward_before_forward(make, shape):
    layer = _named(make(), "layer")
    _raises(StateError, lambda: layer.backward(np.ones(shape)), "backward() called before forward()")


@pytest.mark.parametrize("make,shape", ALL_LAYERS)
def test_dout_of_the_wrong_shape(make, shape):
    layer = _named(make(), "layer")
    out = layer.forward(_x(*shape))
    wrong = out.shape[:-1] + (out.shape[-1] + 1,)
    _raises(ShapeError, lambda: layer.backward(np.ones(wrong)),
            f"expected dout of shape {out.shape}", f"got {wrong}")
    _raises(ShapeError, lambda: layer.backward(np.ones(out.shape).tolist()),
            f"expected dout of shape {out.shape}", "got list")


@pytest.mark.parametrize("make,shape", ALL_LAYERS[:-1])
def test_what_forward_saved_comes_back_as_a_tuple(make, shape):
    """Always a tuple, even of one array: ``(x,) = self._saved(dout)`` must never unpack an
    array of batch size 1 into its only sample."""
    layer = make()
    out = layer.forward(_x(1, *shape[1:]))
    saved = layer._saved(np.ones(out.shape))
    assert isinstance(saved, tuple) and len(saved) >= 1


def test_loss_backward_errors():
    loss = SoftmaxCrossEntropy()
    _raises(StateError, loss.backward, "SoftmaxCrossEntropy", "before forward()")
    _raises(StateError, lambda: loss.probs, "SoftmaxCrossEntropy", "before forward()")
    loss.forward(_x(2, 3), np.array([0, 1]))
    _raises(ShapeError, lambda: loss.backward(np.ones((2, 3))), "scalar dout", "ndarray")


def test_moving_a_layer_forgets_its_forward():
    layer = Linear(3, 2)
    layer.forward(_x(2, 3).astype("float32"))
    layer.to(dtype="float64")           # the saved input has the old dtype: use is an error
    _raises(StateError, lambda: layer.backward(np.ones((2, 2))), "before forward()")


# --------------------------------------------------------------------------- state
def test_load_state_dict_mismatches():
    model = alexnet_small()
    good = {k: v.copy() for k, v in model.state_dict().items()}
    wrong_shape = dict(good, **{"conv1.weight": np.zeros((1, 2, 3, 3))})
    _raises(ShapeError, lambda: model.load_state_dict(wrong_shape),
            "'conv1.weight'", "(32, 3, 5, 5)", "(1, 2, 3, 3)")
    _raises(ShapeError, lambda: model.load_state_dict(wrong_shape, strict=False), "'conv1.weight'")
    missing = {k: v for k, v in good.items() if k != "fc8.bias"}
    _raises(ShapeError, lambda: model.load_state_dict(missing),
            "does not match", "missing ['fc8.bias']", "unexpected nothing")
    extra = dict(good, **{"fc9.weight": np.zeros((2, 2))})
    _raises(ShapeError, lambda: model.load_state_dict(extra), "missing nothing", "unexpected ['fc9.weight']")
    _raises(CheckpointError, lambda: model.set_extra_state({"drop9": {"seed": 0, "calls": 0}}),
            "'drop9'", "drop6")
    _raises(CheckpointError, lambda: model.set_extra_state({"drop6": {"seed": 0}}),
            "Dropout 'drop6'", "'calls'")


# --------------------------------------------------------------------------- settings
BAD_SETTINGS = [
    # A layer's settings are hyper-parameters: a ConfigError, from the one validator.
    (lambda: Conv2d(3, 4, 3, groups=2), ConfigError, ["Conv2d", "(3)", "(4)", "divisible by groups (2)"]),
    (lambda: Conv2d(4, 6, 3, groups=4), ConfigError, ["Conv2d", "(6)", "groups (4)"]),
    (lambda: Conv2d(3, 4, (3, 3, 3)), ConfigError, ["Conv2d", "kernel_size", "pair", "(3, 3, 3)"]),
    (lambda: Conv2d(True, 4, 3), ConfigError, ["Conv2d", "in_channels", "got True"]),
    (lambda: LocalResponseNorm(4), ConfigError, ["LocalResponseNorm", "odd", "got 4"]),
    (lambda: LocalResponseNorm(0), ConfigError, ["LocalResponseNorm", "got 0"]),
    (lambda: LocalResponseNorm(5.0), ConfigError, ["LocalResponseNorm", "size", "got 5.0"]),
    (lambda: LocalResponseNorm(5, alpha=-1e-4), ConfigError, ["alpha", ">= 0", "got -0.0001"]),
    (lambda: LocalResponseNorm(5, beta="0.75"), ConfigError, ["beta", "a number", "got '0.75'"]),
    (lambda: LocalResponseNorm(5, k=0.0), ConfigError, ["LocalResponseNorm", "k", "> 0", "got 0.0"]),
    (lambda: MaxPool2d(3.0, 2), ConfigError, ["MaxPool2d", "kernel_size", "got 3.0"]),
    (lambda: MaxPool2d(3, False), ConfigError, ["MaxPool2d", "stride", "got False"]),
    (lambda: Dropout(1.0), ConfigError, ["Dropout", "[0, 1)", "got 1.0"]),
    (lambda: Dropout(-0.1), ConfigError, ["Dropout", "got -0.1"]),
    (lambda: Dropout(float("nan")), ConfigError, ["Dropout", "got nan"]),
    (lambda: Dropout(True), ConfigError, ["Dropout", "p", "got True"]),
    (lambda: Dropout(0.5, seed=1.5), ConfigError, ["Dropout", "seed", "an integer", "got 1.5"]),
    (lambda: ZeroPad2d(-1), ConfigError, ["ZeroPad2d", ">= 0", "got -1"]),
    (lambda: ZeroPad2d(1.5), ConfigError, ["ZeroPad2d", "got 1.5"]),
    (lambda: Linear(0, 3), ConfigError, ["Linear", "in_features", "got 0"]),
    (lambda: Linear(3, 2.0), ConfigError, ["Linear", "out_features", "got 2.0"]),
    (lambda: Linear(True, 3), ConfigError, ["Linear", "in_features", "got True"]),
    (lambda: Linear(np.bool_(True), 3), ConfigError, ["Linear", "in_features", "got "]),
    (lambda: get_model("vgg"), ConfigError, ["unknown model 'vgg'", "small, alexnet32, alexnet"]),
    (lambda: get_model("small", init="xavier"), ConfigError, ["'xavier'", "'paper' or 'he'"]),
    (lambda: Linear(2, 2).to("tpu"), BackendUnavailable, ["'tpu'", "numpy, cupy"]),
]


@pytest.mark.parametrize("make,exc,fragments", BAD_SETTINGS)
def test_bad_settings(make, exc, fragments):
    _raises(exc, make, *fragments)


def test_valid_settings_come_back_as_python_numbers():
    """NumPy integers and floats are accepted and stored as int and float (a NumPy float64
    scalar would turn float32 activations into float64)."""
    conv = Conv2d(np.int64(3), np.int32(4), np.int64(3), stride=np.int64(2))
    assert type(conv.in_channels) is type(conv.stride) is int and conv.kernel_size == (3, 3)
    drop = Dropout(np.float64(0.25), seed=np.int64(7))
    assert type(drop.p) is float and type(drop.seed) is int
    lrn = LocalResponseNorm(np.int64(3), np.float32(1e-4), 1, 2)
    assert type(lrn.size) is int and all(type(v) is float for v in (lrn.alpha, lrn.beta, lrn.k))
    assert Dropout(0).p == 0.0 and ZeroPad2d(0).padding == 0 and LocalResponseNorm(1).size == 1


def test_error_kinds():
    """A bad setting is a ConfigError; NaN in an array of the right shape is not a ShapeError."""
    assert issubclass(ConfigError, TinyAlexNetError) and issubclass(NonFiniteError, TinyAlexNetError)
    assert not issubclass(NonFiniteError, ShapeError) and not issubclass(ConfigError, ShapeError)
    # Both stay ValueErrors, as they were, for code that catches ValueError.
    assert issubclass(NonFiniteError, ValueError) and issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------- integer settings
# Without their own checks, these ended in ZeroDivisionError / ValueError from
# deep inside NumPy instead of a one-line error naming the layer.
UNCHECKED_SETTINGS = [
    pytest.param(lambda: Conv2d(3, 3, 3, groups=0), id="conv-groups-0"),
    pytest.param(lambda: Conv2d(0, 3, 3), id="conv-in-channels-0"),
    pytest.param(lambda: Conv2d(3, 3, 0), id="conv-kernel-0"),
    pytest.param(lambda: Conv2d(3, 3, 3, stride=0), id="conv-stride-0"),
    pytest.param(lambda: Conv2d(3, 3, 3, padding=-1), id="conv-padding-negative"),
    pytest.param(lambda: MaxPool2d(0, 1), id="pool-kernel-0"),
    pytest.param(lambda: MaxPool2d(3, 0), id="pool-stride-0"),
]


@pytest.mark.parametrize("make", UNCHECKED_SETTINGS)
def test_unchecked_conv_and_pool_settings(make):
    """Building the layer, or its first forward, must raise a one-line TinyAlexNetError."""
    def build_and_run():
        make().forward(_x(1, 3, 8, 8))

    _raises(ConfigError, build_and_run, "must be an integer >=")


def test_maxpool_with_a_large_window():
    """17x17 windows have 289 offsets, more than one byte of arg-max can count."""
    x = _x(1, 2, 20, 19)
    pool = MaxPool2d(17, 1)
    np.testing.assert_array_equal(as_numpy(pool.forward(x)), maxpool2d_naive(x, 17, 1))
    dx = as_numpy(pool.backward(np.ones((1, 2, 4, 3), dtype=x.dtype)))
    # every output's gradient lands on exactly one input pixel
    assert dx.sum() == 2 * 4 * 3
