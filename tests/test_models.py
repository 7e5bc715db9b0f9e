"""The three models: shapes, parameter counts, initialisation, and a whole-network
gradient check on a small network built like AlexNet.

Numbers come from the paper and from a published PyTorch/TensorFlow CIFAR-10
comparison: 60,965,224 parameters for the paper's network at 1000 classes with
55-27-27-13-13-13-13-6 feature maps, 4,539,786 for the comparison's 32x32 network
at 10 classes.
"""
import numpy as np
import pytest

from tinyalexnet import init as initialisation
from tinyalexnet.backend import as_numpy
from tinyalexnet.errors import TinyAlexNetError
from tinyalexnet.gradcheck import numerical_gradient, rel_error
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                                ReLU, Sequential, SoftmaxCrossEntropy, ZeroPad2d)
from tinyalexnet.models import MODELS, alexnet, alexnet32, alexnet_small, get_model

# The reference's table: per-layer output (C, H, W) and parameters for 227x227x3, 1000 classes.
ALEXNET_SHAPES = {
    "conv1": (96, 55, 55), "norm1": (96, 55, 55), "pool1": (96, 27, 27),
    "conv2": (256, 27, 27), "norm2": (256, 27, 27), "pool2": (256, 13, 13),
    "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13),
    "pool5": (256, 6, 6), "flatten": (9216,),
    "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
}
ALEXNET_PARAMS = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936,
                  "conv5": 442_624, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}

# The comparison's Keras summary of its 32x32 AlexNet (10 classes).
ALEXNET32_SHAPES = {
    "conv1": (96, 22, 22), "pad1": (96, 26, 26), "pool1": (96, 12, 12),
    "conv2": (256, 12, 12), "pool2": (256, 5, 5), "conv3": (384, 5, 5), "conv4": (384, 5, 5),
    "conv5": (256, 5, 5), "pool5": (256, 2, 2), "flatten": (1024,),
    "fc6": (512,), "fc7": (512,), "fc8": (10,),
}
ALEXNET32_PARAMS = {"conv1": 34_944, "conv2": 614_656, "conv3": 885_120, "conv4": 1_327_488,
                    "conv5": 884_992, "fc6": 524_800, "fc7": 262_656, "fc8": 5_130}


def _layer_shapes(model, input_shape):
    """{layer name: output shape of one sample}, walking output_shape (no forward pass)."""
    shapes, shape = {}, tuple(input_shape)
    for name, layer in model.layers.items():
        shape = layer.output_shape(shape)
        shapes[name] = shape
    return shapes


def _layer_params(model):
    return {name: layer.num_parameters() for name, layer in model.layers.items()
            if layer.num_parameters()}


@pytest.fixture(scope="module")
def paper_alexnet():
    """The 61 M-parameter network is built once (a few seconds of random draws)."""
    return alexnet()


# --------------------------------------------------------------------------- alexnet
def test_alexnet_shapes_and_parameter_counts(paper_alexnet):
    model = paper_alexnet
    assert model.input_shape == (3, 227, 227)
    shapes = _layer_shapes(model, model.input_shape)
    assert {k: shapes[k] for k in ALEXNET_SHAPES} == ALEXNET_SHAPES
    assert _layer_params(model) == ALEXNET_PARAMS
    assert model.num_parameters() == 60_965_224
    summary = model.summary(model.input_shape)
    assert "Total parameters: 60,965,224" in summary
    assert "6x6" in summary and "55x55" in summary


def test_alexnet_structure_follows_the_paper(paper_alexnet):
    model = paper_alexnet
    names = list(model.layers)
    assert names == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2",
                     "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "flatten",
                     "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    groups = {n: model[n].groups for n in names if isinstance(model[n], Conv2d)}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert model["conv1"].stride == 4 and model["conv1"].kernel_size == (11, 11)
    assert model["conv2"].params["weight"].shape == (256, 48, 5, 5)   # the paper's 5x5x48
    for n in ("norm1", "norm2"):
        lrn = model[n]
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    for n in ("pool1", "pool2", "pool5"):
        assert (model[n].kernel_size, model[n].stride) == (3, 2)       # overlapping
    assert [model[n].p for n in ("drop6", "drop7")] == [0.5, 0.5]


def test_alexnet_paper_init(paper_alexnet):
    for name, layer in paper_alexnet.layers.items():
        if not layer.params:
            continue
        w, b = layer.params["weight"], layer.params["bias"]
        assert w.dtype == np.float32
        # N(0, 0.01^2): the standard error of a std from n >= 34,848 draws is < 0.4%.
        assert abs(float(w.std()) - 0.01) < 0.0003, name
        assert abs(float(w.mean())) < 0.0003, name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert (b == expected_bias).all(), name


def test_alexnet_forward_one_image(paper_alexnet):
    model = paper_alexnet.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype("float32")
    out = model.forward(x)
    assert out.shape == (1, 1000) and out.dtype == np.float32
    assert np.isfinite(out).all()
    model.train()


def test_alexnet_grey_and_ten_classes():
    model = get_model("alexnet", num_classes=10, in_channels=1)
    assert model["conv1"].params["weight"].shape == (96, 1, 11, 11)
    assert model.input_shape == (1, 227, 227)
    assert _layer_shapes(model, (1, 227, 227))["pool5"] == (256, 6, 6)
    expected = 60_965_224 - 2 * 96 * 11 * 11 - 4_097_000 + (4096 * 10 + 10)
    assert model.num_parameters() == expected


# --------------------------------------------------------------------------- alexnet32
def test_alexnet32_shapes_and_parameter_counts():
    model = alexnet32()
    assert model.input_shape == (3, 32, 32)
    shapes = _layer_shapes(model, (3, 32, 32))
    assert {k: shapes[k] for k in ALEXNET32_SHAPES} == ALEXNET32_SHAPES
    assert _layer_params(model) == ALEXNET32_PARAMS
    assert model.num_parameters() == 4_539_786
    assert "Total parameters: 4,539,786" in model.summary((3, 32, 32))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype("float32")
    assert model.forward(x).shape == (2, 10)


def test_alexnet32_grey():
    model = alexnet32(in_channels=1)
    assert model.num_parameters() == 4_539_786 - 2 * 96 * 11 * 11
    assert model.forward(np.zeros((1, 1, 32, 32), "float32")).shape == (1, 10)


# --------------------------------------------------------------------------- alexnet_small
def _small_params(in_channels, classes):
    """alexnet_small's layer list, counted by hand: (out, in/groups, kh, kw) + out biases."""
    conv = [(32, in_channels, 5), (64, 32 // 2, 5), (96, 64, 3), (96, 96 // 2, 3), (64, 96 // 2, 3)]
    dense = [(64 * 3 * 3, 256), (256, 256), (256, classes)]
    return sum(f * c * k * k + f for f, c, k in conv) + sum(i * o + o for i, o in dense)


@pytest.mark.parametrize("in_channels,classes", [(3, 10), (1, 10), (3, 4)])
def test_alexnet_small_shapes_and_parameter_counts(in_channels, classes):
    model = alexnet_small(num_classes=classes, in_channels=in_channels)
    shapes = _layer_shapes(model, (in_channels, 32, 32))
    assert shapes["conv1"] == (32, 32, 32) and shapes["pool1"] == (32, 15, 15)
    assert shapes["pool2"] == (64, 7, 7) and shapes["conv5"] == (64, 7, 7)
    assert shapes["pool5"] == (64, 3, 3) and shapes["fc8"] == (classes,)
    assert model.num_parameters() == _small_params(in_channels, classes)
    groups = [model[n].groups for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    assert groups == [1, 2, 1, 2, 2]
    assert isinstance(model["norm1"], LocalResponseNorm) and isinstance(model["norm2"], LocalResponseNorm)
    x = np.random.default_rng(2).standard_normal((3, in_channels, 32, 32)).astype("float32")
    out = model.forward(x)
    assert out.shape == (3, classes)
    assert model.backward(np.ones_like(out)) is None      # conv1 skips dx: nobody needs it
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for _, _, g in model.named_parameters())


def test_small_model_on_each_backend(xp, backend_name):
    model = alexnet_small().to(backend_name)
    x = xp.asarray(np.random.default_rng(3).standard_normal((2, 3, 32, 32)), dtype="float32")
    out = model.eval().forward(x)
    reference = alexnet_small().eval().forward(as_numpy(x))       # same seed, on NumPy
    np.testing.assert_allclose(as_numpy(out), reference, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("build", [alexnet32, alexnet_small])
def test_he_init_statistics(build):
    model = build()
    for name, layer in model.layers.items():
        if not layer.params:
            continue
        w = layer.params["weight"]
        fan_in = w.size // w.shape[0]
        # He: N(0, 2 / fan_in); the classifier fc8: N(0, 0.01^2), so that logits start near 0
        std = 0.01 if name == "fc8" else np.sqrt(2.0 / fan_in)
        # He: N(0, 2 / fan_in).  Every layer here has >= 2,560 weights: std within 6%.
        assert abs(float(w.std()) / std - 1) < 0.06, name
        assert abs(float(w.mean())) < 0.1 * std, name
        assert (layer.params["bias"] == 0).all(), name


@pytest.mark.parametrize("init", ["he", "paper"])
def test_first_loss_is_near_log_k(init):
    """A fresh network says "don't know": its first training loss is near log K (lesson 2).

    The small model, in training mode (dropout on), on 256 real images of the embedded
    subset, three seeds.  He's rule on the classifier too gave 3.6 to 4.7 here.
    """
    from tinyalexnet.datasets import load_dataset
    from tinyalexnet.transforms import Pipeline
    train = load_dataset("fashion-mnist-subset", "train")
    images, labels = train.get_batch(np.arange(0, len(train), len(train) // 256)[:256])
    for seed in range(3):
        model = alexnet_small(num_classes=10, in_channels=1, init=init, seed=seed)
        x = Pipeline.for_dataset(train, model.input_shape)(images, train=False)
        loss = float(SoftmaxCrossEntropy().forward(model.forward(x), labels))
        assert abs(loss - np.log(10)) < 0.1, (seed, loss)


def test_paper_init_on_small_model():
    model = alexnet_small(init="paper")
    for name, layer in model.layers.items():
        if layer.params:
            assert abs(float(layer.params["weight"].std()) - 0.01) < 0.0006, name
            ones = name in ("conv2", "conv4", "conv5", "fc6", "fc7")
            assert (layer.params["bias"] == (1.0 if ones else 0.0)).all(), name


def test_get_model_default_init_and_names():
    assert set(MODELS) == {"alexnet_small", "alexnet32", "alexnet"}
    assert all(MODELS[name].__name__ == name for name in MODELS)   # one name: the builder's
    assert (get_model("alexnet_small")["conv2"].params["bias"] == 0).all()   # He by default
    assert (get_model("alexnet_small", init="paper")["conv2"].params["bias"] == 1).all()
    assert get_model("alexnet32", num_classes=7).output_shape((3, 32, 32)) == (7,)
    with pytest.raises(TinyAlexNetError,
                       match="unknown model 'vgg'.*alexnet_small, alexnet32, alexnet"):
        get_model("vgg")


@pytest.mark.parametrize("name", ["small", "alexnet32"])
@pytest.mark.parametrize("scheme", ["he", "paper"])
def test_builders_draw_each_weight_once(monkeypatch, name, scheme):
    """A model's build draws as many random numbers as it has weights, not twice as many."""
    drawn = []
    real_normal = initialisation.normal

    def counting_normal(shape, std, rng, dtype="float32"):
        drawn.append(int(np.prod(shape)))
        return real_normal(shape, std, rng, dtype)

    monkeypatch.setattr(initialisation, "normal", counting_normal)   # he_normal calls it too
    model = get_model(name, init=scheme, seed=1)
    weights = sum(int(p.size) for key, p, _ in model.named_parameters() if key.endswith("weight"))
    assert sum(drawn) == weights


@pytest.mark.parametrize("name", ["small", "alexnet32"])
@pytest.mark.parametrize("scheme", ["he", "paper"])
def test_a_built_model_holds_what_init_model_draws_for_its_seed(name, scheme):
    """Building with a seed gives exactly init_model's weights for that seed, whatever the
    model held before: one definition of a model's weights, reproducible run after run."""
    built = get_model(name, init=scheme, seed=3)
    redrawn = initialisation.init_model(get_model(name, init="he", seed=11), scheme, seed=3)
    for (key, a), (_, b) in zip(built.state_dict().items(), redrawn.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=key)


def test_same_seed_same_network():
    a, b, c = alexnet_small(seed=5), alexnet_small(seed=5), alexnet_small(seed=6)
    for (name, pa, _), (_, pb, _), (_, pc, _) in zip(a.named_parameters(), b.named_parameters(),
                                                     c.named_parameters()):
        np.testing.assert_array_equal(pa, pb)
        if name.endswith("weight"):
            assert not np.array_equal(pa, pc), name
    # Dropout streams: fixed by the seed, distinct per layer.
    assert a.get_extra_state() == b.get_extra_state() != c.get_extra_state()
    assert a["drop6"].seed != a["drop7"].seed
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype("float32")
    np.testing.assert_array_equal(a.forward(x), b.forward(x))        # train mode: same masks


def test_train_and_eval_modes():
    model = alexnet_small()
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype("float32")
    model.eval()
    assert not any(m.training for _, m in model.named_modules())
    np.testing.assert_array_equal(model.forward(x), model.forward(x))     # deterministic
    model.train()
    assert all(m.training for _, m in model.named_modules())
    assert not np.array_equal(model.forward(x), model.forward(x))         # new masks each call


# --------------------------------------------------------------------------- whole network
def _tiny_alexnet():
    """AlexNet's pattern in miniature: grouped conv, ReLU, LRN, overlapping pool, dense, dropout."""
    return Sequential([
        ("conv1", Conv2d(3, 4, 3, stride=2, padding=1, rng=0)), ("relu1", ReLU()),
        ("norm1", LocalResponseNorm(3, 0.1, 0.75, 2.0)), ("pool1", MaxPool2d(3, 2)),
        ("conv2", Conv2d(4, 6, 3, padding=1, groups=2, rng=1)), ("relu2", ReLU()),
        ("norm2", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool2", MaxPool2d(3, 2)),
        ("pad", ZeroPad2d(1)), ("flatten", Flatten()),
        ("fc6", Linear(6 * 4 * 4, 8, rng=2)), ("relu6", ReLU()), ("drop6", Dropout(0.5, seed=3)),
        ("fc7", Linear(8, 5, rng=4)),
    ])


def test_whole_network_gradient_check(xp, backend_name):
    """d loss / d (input and every parameter) of network + softmax cross-entropy, in float64.

    Bound 1e-6 with h = 1e-6: the network has kinks (ReLU, max pooling), but random
    inputs put none of them within h of a sample point (measured errors ~1e-9).
    """
    model = _tiny_alexnet().to(backend_name, dtype="float64").train()
    rng = np.random.default_rng(5)
    model.load_state_dict({k: rng.standard_normal(p.shape) * 0.3
                           for k, p in model.state_dict().items()})
    x = xp.asarray(rng.standard_normal((2, 3, 23, 21)))
    labels = xp.asarray([1, 4])
    loss = SoftmaxCrossEntropy()
    state = model.get_extra_state()             # the dropout counter: same mask every call

    def loss_value():
        model.set_extra_state(state)
        return loss.forward(model.forward(x), labels)

    loss_value()
    dropped = int((as_numpy(model["drop6"]._cache[1]) == 0).sum())
    assert 0 < dropped < 16                     # dropout really drops some units
    dx = model.backward(loss.backward())
    analytic = {"x": as_numpy(dx)}
    analytic.update({name: as_numpy(g).copy() for name, _, g in model.named_parameters()})
    errors = {"x": rel_error(analytic["x"], numerical_gradient(loss_value, x))}
    for name, p, _ in model.named_parameters():
        errors[name] = rel_error(analytic[name], numerical_gradient(loss_value, p))
    assert len(errors) == 1 + 8                 # input + 4 layers x (weight, bias)
    assert max(errors.values()) < 1e-6, errors
