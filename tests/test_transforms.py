"""The input pipeline: every step against a direct (loop) reference, and the Pipeline as a whole."""
import json

import numpy as np
import pytest

from tinyalexnet import transforms as T
from tinyalexnet.backend import as_numpy
from tinyalexnet.datasets import ArrayDataset, load_dataset
from tinyalexnet.errors import ShapeError, TinyAlexNetError


def rgb_dataset(n=64, size=32, seed=0):
    """Correlated colours (as in photos), so the RGB covariance has a clear first component."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (n, 1, size, size))
    tint = rng.integers(0, 56, (n, 3, 1, 1))
    images = (base + tint).astype(np.uint8)
    return ArrayDataset(images, rng.integers(0, 10, n), [str(k) for k in range(10)], "rgb")


# ----------------------------------------------------------------------------- steps

def test_to_float_and_normalize(xp):
    x = xp.asarray(np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1))
    f = T.to_float(x)
    assert f.dtype == xp.float32
    np.testing.assert_allclose(as_numpy(f).ravel(), [0, 0.2, 1], rtol=1e-6)
    y = T.normalize(f, [0.5, 0.1, 0.0], [0.5, 0.2, 2.0])
    np.testing.assert_allclose(as_numpy(y).ravel(), [-1, 0.5, 0.5], rtol=1e-6)


def test_channel_stats_match_numpy():
    ds = rgb_dataset(50)
    mean, std, cov = T.channel_stats(ds, pixels_per_chunk=5000)      # several chunks
    px = ds.images.transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, px.mean(1), rtol=1e-12)
    np.testing.assert_allclose(std, px.std(1), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(px, bias=True), rtol=1e-9, atol=1e-12)
    sub = T.channel_stats(ds, max_images=10, seed=4)                 # a fixed subsample
    np.testing.assert_array_equal(sub[0], T.channel_stats(ds, max_images=10, seed=4)[0])
    assert not np.allclose(sub[0], mean, rtol=1e-6)


def test_normalised_training_images_have_zero_mean_unit_std():
    ds = rgb_dataset(40, size=32)
    pipe = T.Pipeline.for_dataset(ds, (3, 32, 32))
    y = pipe(ds.images, train=False)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_pad(xp):
    x = xp.asarray(np.arange(2 * 1 * 28 * 28, dtype=np.uint8).reshape(2, 1, 28, 28))
    y = as_numpy(T.pad(x, 2))
    assert y.shape == (2, 1, 32, 32) and y.dtype == np.uint8
    np.testing.assert_array_equal(y[:, :, 2:30, 2:30], as_numpy(x))
    assert y[:, :, :2].max() == 0 and y[:, :, :, 30:].max() == 0
    assert T.pad(x, ((1, 0), (0, 3))).shape == (2, 1, 29, 31)


@pytest.mark.parametrize("size", [(20, 13), (4, 4), (8, 8), (227, 227)])
def test_bilinear_resize_of_a_ramp(xp, size):
    """Bilinear interpolation reproduces a linear function at the half-pixel source coordinates."""
    H, W = 8, 8
    ramp = 2.0 * np.arange(H)[:, None] + 3.0 * np.arange(W)[None, :] + 1
    x = xp.asarray(np.broadcast_to(ramp, (2, 3, H, W)).astype(np.float32))
    y = as_numpy(T.resize(x, size))
    h, w = size
    u = np.clip((np.arange(h) + 0.5) * H / h - 0.5, 0, H - 1)
    v = np.clip((np.arange(w) + 0.5) * W / w - 0.5, 0, W - 1)
    expected = 2 * u[:, None] + 3 * v[None, :] + 1
    assert y.shape == (2, 3, h, w)
    np.testing.assert_allclose(y[1, 2], expected, rtol=1e-6)
    if size == (4, 4):                                   # halving: the mean of each 2x2 block
        np.testing.assert_allclose(y[0, 0], ramp.reshape(4, 2, 4, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_resize_matches_a_loop_on_random_pixels():
    x = np.random.default_rng(1).random((2, 1, 5, 7)).astype(np.float32)
    y = T.resize(x, (9, 4))
    ref = np.zeros((2, 1, 9, 4))
    for i in range(9):
        for j in range(4):
            u = min(max((i + 0.5) * 5 / 9 - 0.5, 0), 4)
            v = min(max((j + 0.5) * 7 / 4 - 0.5, 0), 6)
            i0, j0 = int(u), int(v)
            i1, j1, a, b = min(i0 + 1, 4), min(j0 + 1, 6), u - int(u), v - int(v)
            ref[:, :, i, j] = ((1 - a) * (1 - b) * x[:, :, i0, j0] + (1 - a) * b * x[:, :, i0, j1]
                               + a * (1 - b) * x[:, :, i1, j0] + a * b * x[:, :, i1, j1])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_random_crop_with_flips_equals_a_loop(xp):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (16, 3, 12, 10)).astype(np.uint8)
    top, left, flip = T.random_crop_params(np.random.default_rng(3), 16, (12, 10), (8, 6))
    assert top.min() >= 0 and top.max() <= 4 and left.max() <= 4
    assert 0 < flip.sum() < 16                           # both kinds drawn
    y = as_numpy(T.crop(xp.asarray(x), top, left, (8, 6), flip))
    for b in range(16):
        patch = x[b, :, top[b]:top[b] + 8, left[b]:left[b] + 6]
        np.testing.assert_array_equal(y[b], patch[:, :, ::-1] if flip[b] else patch)
    again = T.random_crop_params(np.random.default_rng(3), 16, (12, 10), (8, 6))
    for a, b in zip(again, (top, left, flip)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ShapeError, match="does not fit in 12x10"):
        T.crop(xp.asarray(x), top + 5, left, (8, 6))


def test_random_crops_cover_every_offset():
    top, left, flip = T.random_crop_params(np.random.default_rng(0), 2000, (40, 40), (32, 32))
    assert set(top.tolist()) == set(range(9)) == set(left.tolist())
    assert 0.45 < flip.mean() < 0.55
    no_flip = T.random_crop_params(np.random.default_rng(0), 50, (40, 40), (32, 32), flip=False)[2]
    assert not no_flip.any()


def test_ten_crop_corners_centre_and_reflections(xp):
    x = np.arange(2 * 1 * 7 * 9, dtype=np.float32).reshape(2, 1, 7, 9)
    y = as_numpy(T.ten_crop(xp.asarray(x), (4, 5)))
    assert y.shape == (10, 2, 1, 4, 5)
    views = [x[:, :, :4, :5], x[:, :, :4, 4:], x[:, :, 3:, :5], x[:, :, 3:, 4:], x[:, :, 1:5, 2:7]]
    for k, view in enumerate(views):
        np.testing.assert_array_equal(y[k], view)
        np.testing.assert_array_equal(y[k + 5], view[:, :, :, ::-1])


def test_standardize_is_to_float_lighting_normalize_in_one_pass(xp):
    """The pipeline's one pass equals the three taught steps called one after the other."""
    rng = np.random.default_rng(6)
    x = xp.asarray(rng.integers(0, 256, (5, 3, 4, 7)).astype(np.uint8))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    eigval, eigvec = T.rgb_pca(np.cov(rng.random((3, 50))))
    alpha = T.lighting_alpha(rng, 5)
    steps = T.normalize(T.lighting(T.to_float(x), eigval, eigvec, alpha), mean, std)
    fused = T.standardize(x, mean, std, T.lighting_offset(eigval, eigvec, alpha))
    assert fused.dtype == xp.float32 and fused.flags.c_contiguous
    np.testing.assert_allclose(as_numpy(fused), as_numpy(steps), rtol=1e-5, atol=1e-5)
    floats = T.standardize(T.to_float(x), mean, std)                   # already on [0, 1]
    np.testing.assert_allclose(as_numpy(floats), as_numpy(T.normalize(T.to_float(x), mean, std)),
                               rtol=1e-5, atol=1e-5)
    # and against plain arithmetic in float64, written out here
    ref = (as_numpy(x) / 255 + T.lighting_offset(eigval, eigvec, alpha)[:, :, None, None]
           - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(as_numpy(fused), ref, rtol=1e-5, atol=1e-5)


def test_normalize_takes_a_mean_per_image(xp):
    x = xp.asarray(np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2))
    mean = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])                # (B, C)
    y = as_numpy(T.normalize(x, mean, [2.0, 4.0, 8.0]))
    assert y.dtype == np.float32
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(y[b, c], (as_numpy(x)[b, c] - mean[b, c]) / [2, 4, 8][c],
                                       rtol=1e-6)
    assert T.normalize(x, [0, 0, 0], [1, 1, 1]) is not x                 # a new array


def test_rgb_pca():
    cov = np.cov(np.random.default_rng(0).random((3, 500)))
    eigval, eigvec = T.rgb_pca(cov)
    assert np.all(np.diff(eigval) <= 0)
    np.testing.assert_allclose(eigvec @ np.diag(eigval) @ eigvec.T, cov, atol=1e-14)


def test_lighting_adds_the_pca_offset_per_image(xp):
    rng = np.random.default_rng(5)
    x = rng.random((4, 3, 5, 6)).astype(np.float32)
    eigval, eigvec = T.rgb_pca(np.cov(rng.random((3, 100))))
    alpha = T.lighting_alpha(np.random.default_rng(9), 4)
    y = as_numpy(T.lighting(xp.asarray(x), eigval, eigvec, alpha))
    for b in range(4):
        offset = sum(eigvec[:, i] * alpha[b, i] * eigval[i] for i in range(3))   # p . (a * l)
        np.testing.assert_allclose(y[b] - x[b], np.broadcast_to(offset[:, None, None], (3, 5, 6)),
                                   atol=1e-6)
    with pytest.raises(ShapeError, match="expected RGB"):
        T.lighting(xp.asarray(x[:, :1]), eigval, eigvec, alpha)


# ----------------------------------------------------------------------------- geometry

TARGETS = (8, 16, 28, 32, 64, 100, 227)


def _plans():
    for t in TARGETS:
        for s in range(1, 3 * t + 1):
            yield s, t, T.plan(s, t)


def _table(row, s, t):
    """A PLAN row's text (condition, resize to, borders) worked out for sides s and t."""
    names = {"s": s, "t": t, "m": t // 8, "c": T.paper_canvas(t), "__builtins__": {}}
    return [eval(expression, names) for expression in row[1:]]


def test_exactly_one_plan_row_holds_for_every_side():
    """The table's conditions split the source sides 1, 2, 3, ... with no gap and no overlap."""
    for t in TARGETS:
        for s in range(1, 3 * t + 1):
            holding = [row[0] for row in T.PLAN if _table(row, s, t)[0]]
            assert len(holding) == 1, (s, t, holding)
            assert T.plan(s, t)[0] == holding[0]


def test_the_plan_table_is_what_plan_computes():
    """PLAN (the text in the docstring and lesson 8) and plan (the code) agree on every side."""
    for s, t, (policy, size, before, after) in _plans():
        row = next(row for row in T.PLAN if row[0] == policy)
        holds, side, row_before, row_after = _table(row, s, t)
        assert holds and (size or s) == side and (before, after) == (row_before, row_after), \
            (s, t, policy)
        assert size != s, (s, t)                   # a side already right is not resized


def test_every_planned_canvas_holds_the_crop():
    for s, t, (policy, size, before, after) in _plans():
        canvas = (size or s) + before + after
        assert canvas >= t, (s, t)
        assert min(before, after) >= 0 and (size is None or size >= t), (s, t)


def test_small_images_get_the_least_border_and_a_margin_to_shift_in():
    """Images no larger than the model: a border brings them to t, centred, plus the same
    margin m = t // 8 on every side (random crops shift by up to m, the centre crop is the
    whole image); larger images get no border at all."""
    for s, t, (policy, size, before, after) in _plans():
        m, side = t // 8, size or s
        if s > t:
            assert before == after == 0, (s, t)
            continue
        assert side + before + after == t + 2 * m, (s, t)          # exactly t, plus m each side
        assert abs(before - after) <= 1 and min(before, after) >= m, (s, t)
        # the test view, the centre t x t of the canvas, shows the whole (resized) image
        start = (side + before + after - t) // 2
        assert start <= before and before + side <= start + t, (s, t)


def test_resizing_only_when_sizes_are_far_apart():
    """No resampling from three quarters of the model's side up to the paper's canvas
    (256 for 227); below, upsampling to the model's side; above, shrinking to the canvas."""
    for s, t, (policy, size, _, _) in _plans():
        c = T.paper_canvas(t)
        if t - t // 4 <= s <= c:
            assert size is None, (s, t)
        elif s < t:
            assert size == t, (s, t)
        else:
            assert size == c >= t, (s, t)


def test_the_paper_and_the_readme_sizes():
    """The cases the paper and README name: 227 crops of 256 images, Fashion-MNIST padded to
    32 for the small models and upsampled to 227 for alexnet, CIFAR's pad-4-and-crop-32."""
    assert T.paper_canvas(227) == 256 and T.paper_canvas(32) == 36
    assert T.plan(256, 227) == ("crop", None, 0, 0)
    assert T.plan(28, 32)[0] == "pad" and T.plan(28, 227)[0] == "upsample"
    assert T.plan(32, 32) == ("pad", None, 4, 4)
    assert T.plan(300, 227)[:2] == ("downsample", 256)


def test_the_plan_table_in_the_docstring_is_the_one_that_runs():
    from tinyalexnet.transforms import pipeline
    assert T.plan_table() in pipeline.__doc__
    header = T.plan_table().splitlines()[0].split()
    assert header[:2] == ["policy", "when"] and len(T.plan_table().splitlines()) == len(T.PLAN) + 1


def test_pipeline_grey_28_to_32_is_padding_then_normalising():
    train = load_dataset("fashion-mnist-subset", "train")
    pipe = T.Pipeline.for_dataset(train, (1, 32, 32))
    assert pipe.policy == "pad" and pipe.canvas == (40, 40)
    x, _ = train.get_batch(np.arange(10))
    y = pipe(x, train=False)
    assert y.shape == (10, 1, 32, 32) and y.dtype == np.float32 and y.flags.c_contiguous
    ref = (np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))) / 255 - pipe.mean[0]) / pipe.std[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    px = train.images / 255                              # stats of the stored training images
    np.testing.assert_allclose(pipe.mean, [px.mean()], rtol=1e-9)
    np.testing.assert_allclose(pipe.std, [px.std()], rtol=1e-7)


def test_pipeline_training_crops_are_reproducible_windows_of_the_canvas():
    train = load_dataset("fashion-mnist-subset", "train")
    pipe = T.Pipeline.for_dataset(train, (1, 32, 32), augment=True)
    x, _ = train.get_batch(np.arange(32))
    y1 = pipe(x, train=True, rng=np.random.default_rng([0, 1, 2]))
    y2 = pipe(x, train=True, rng=np.random.default_rng([0, 1, 2]))
    y3 = pipe(x, train=True, rng=np.random.default_rng([0, 1, 3]))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    top, left, flip = T.random_crop_params(np.random.default_rng([0, 1, 2]), 32, (40, 40), (32, 32))
    canvas = (np.pad(x, ((0, 0), (0, 0), (6, 6), (6, 6))) / 255 - pipe.mean[0]) / pipe.std[0]
    for b in range(32):
        patch = canvas[b, :, top[b]:top[b] + 32, left[b]:left[b] + 32]
        np.testing.assert_allclose(y1[b], patch[:, :, ::-1] if flip[b] else patch, atol=1e-5)
    np.testing.assert_array_equal(pipe(x, train=False), pipe(x, train=False, rng=np.random.default_rng(1)))
    with pytest.raises(TinyAlexNetError, match="needs rng"):
        pipe(x, train=True)


def test_pipeline_lighting_offsets_each_image_by_its_pca_colour():
    ds = rgb_dataset(16)
    pipe = T.Pipeline.for_dataset(ds, (3, 32, 32), lighting=True)
    assert pipe.lighting and pipe.eigval.shape == (3,) and pipe.eigval[0] > pipe.eigval[2]
    plain = pipe(ds.images, train=False)
    noisy = pipe(ds.images, train=True, rng=np.random.default_rng(11))
    alpha = np.random.default_rng(11).normal(0, 0.1, (16, 3))        # the only draw (no crops)
    offset = (alpha * pipe.eigval) @ pipe.eigvec.T                     # (B, 3), [0, 1] scale
    expected = plain + (offset / pipe.std)[:, :, None, None]
    np.testing.assert_allclose(noisy, expected, atol=1e-5)
    grey = T.Pipeline.for_dataset(load_dataset("fashion-mnist-subset", "test"), (1, 32, 32),
                                  lighting=True)
    assert not grey.lighting and grey.config()["pca"] is None           # no colour to perturb


@pytest.mark.parametrize("source, input_size, policy", [(28, 227, "upsample"), (256, 227, "crop"),
                                                        (64, 32, "downsample")])
def test_pipeline_shapes_for_each_policy(source, input_size, policy):
    ds = rgb_dataset(3, size=source)
    pipe = T.Pipeline.for_dataset(ds, (3, input_size, input_size), augment=True, lighting=True)
    assert pipe.policy == policy
    rng = np.random.default_rng(0)
    assert pipe(ds.images, train=True, rng=rng).shape == (3, 3, input_size, input_size)
    assert pipe.ten_crop(ds.images).shape == (10, 3, 3, input_size, input_size)
    if policy == "crop":                                 # the paper's centre 227 of 256
        y = pipe(ds.images, train=False)
        ref = (ds.images[:, :, 14:241, 14:241] / 255 - pipe.mean[:, None, None]) / pipe.std[:, None, None]
        np.testing.assert_allclose(y, ref, atol=1e-5)


def test_pipeline_ten_crop_centre_view_is_the_test_view():
    ds = rgb_dataset(5)
    pipe = T.Pipeline.for_dataset(ds, (3, 32, 32))
    views = pipe.ten_crop(ds.images)
    np.testing.assert_allclose(views[4], pipe(ds.images, train=False), atol=1e-6)
    np.testing.assert_allclose(views[9], views[4][:, :, :, ::-1], atol=1e-6)


@pytest.mark.parametrize("source, side", [(28, 32), (20, 227), (36, 32), (64, 32)],
                         ids=["pad", "upsample", "crop", "downsample"])
def test_the_pipeline_runs_the_taught_functions_in_order(source, side):
    """Training view with crops, flips and lighting: the same numbers as calling resize,
    pad, random_crop_params + crop, to_float, lighting_alpha + lighting and normalize
    one after the other, with the pipeline's own plan and statistics."""
    ds = rgb_dataset(6, size=source)
    pipe = T.Pipeline.for_dataset(ds, (3, side, side), augment=True, lighting=True)
    got = pipe(ds.images, train=True, rng=np.random.default_rng(3))
    rng = np.random.default_rng(3)
    x = ds.images
    if pipe.resize is not None:
        x = T.resize(T.to_float(x), pipe.resize)
    x = T.pad(x, pipe.padding)
    top, left, flip = T.random_crop_params(rng, 6, x.shape[2:], (side, side))
    x = T.crop(x, top, left, (side, side), flip)
    x = T.lighting(T.to_float(x), pipe.eigval, pipe.eigvec, T.lighting_alpha(rng, 6))
    np.testing.assert_allclose(got, T.normalize(x, pipe.mean, pipe.std), rtol=1e-5, atol=1e-5)


# Pipeline.config() as the first version of the pipeline wrote it into checkpoints.
CONFIGS_OF_VERSION_1 = [
    {"version": 1, "source_shape": [1, 28, 28], "input_shape": [1, 32, 32], "policy": "pad",
     "resize": None, "padding": [[6, 6], [6, 6]], "canvas": [40, 40],
     "mean": [0.2865289507469655], "std": [0.353667857351912], "augment": True, "flip": True,
     "lighting": False, "lighting_std": 0.1, "pca": None},
    {"version": 1, "source_shape": [3, 256, 256], "input_shape": [3, 227, 227], "policy": "crop",
     "resize": None, "padding": [[0, 0], [0, 0]], "canvas": [256, 256],
     "mean": [0.5010011074589749, 0.48752071530211205, 0.49217757804721013],
     "std": [0.23702032958960736, 0.23578123395245779, 0.23486980909176217], "augment": True,
     "flip": True, "lighting": True, "lighting_std": 0.1,
     "pca": {"eigval": [0.15805673508730705, 0.006632497778503598, 0.0022460212798998997],
             "eigvec": [[-0.5746482168525457, -0.7520215449127505, -0.32286688101325817],
                        [-0.5748262757133951, 0.6516968970618904, -0.49483927401669775],
                        [-0.5825411398499318, 0.09876613967825276, 0.8067782037433822]]}},
    {"version": 1, "source_shape": [1, 28, 28], "input_shape": [1, 227, 227],
     "policy": "upsample", "resize": [227, 227], "padding": [[28, 28], [28, 28]],
     "canvas": [283, 283], "mean": [0.3], "std": [0.35], "augment": True, "flip": False,
     "lighting": False, "lighting_std": 0.1, "pca": None},
]


@pytest.mark.parametrize("cfg", CONFIGS_OF_VERSION_1, ids=lambda c: c["policy"])
def test_a_pipeline_config_from_a_first_version_checkpoint_still_loads(cfg):
    pipe = T.Pipeline.from_config(json.loads(json.dumps(cfg)))
    assert pipe.config() == cfg                                 # written back the same way
    C, h, w = cfg["source_shape"]
    x = np.random.default_rng(2).integers(0, 256, (2, C, h, w)).astype(np.uint8)
    y = pipe(x, train=False)
    assert y.shape == (2, *cfg["input_shape"])
    mean, std = np.array(cfg["mean"])[:, None, None], np.array(cfg["std"])[:, None, None]
    if cfg["policy"] == "pad":                                  # 28 in the middle of 32
        ref = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))) / 255
    elif cfg["policy"] == "crop":                               # the paper's centre 227 of 256
        ref = x[:, :, 14:241, 14:241] / 255
    else:                                                       # the whole image, resized
        ref = T.resize(x / np.float32(255), (227, 227))
    np.testing.assert_allclose(y, (ref - mean) / std, rtol=1e-5, atol=1e-5)


def test_config_round_trip_gives_identical_outputs():
    ds = rgb_dataset(8)
    pipe = T.Pipeline.for_dataset(ds, (3, 32, 32), augment=True, lighting=True)
    cfg = json.loads(json.dumps(pipe.config()))
    again = T.Pipeline.from_config(cfg)
    assert again.config() == pipe.config()
    for train in (False, True):
        np.testing.assert_array_equal(pipe(ds.images, train, np.random.default_rng(4)),
                                      again(ds.images, train, np.random.default_rng(4)))
    np.testing.assert_array_equal(pipe.ten_crop(ds.images), again.ten_crop(ds.images))
    with pytest.raises(ShapeError, match="invalid configuration"):
        T.Pipeline.from_config({"mean": [0.5]})


def test_pipeline_backend_matches_numpy(xp):
    train = load_dataset("fashion-mnist-subset", "test")
    pipe = T.Pipeline.for_dataset(train, (1, 32, 32), augment=True)
    x, _ = train.get_batch(np.arange(8))
    on_xp = pipe(x, train=True, rng=np.random.default_rng(2), xp=xp)
    assert type(on_xp) is type(xp.zeros(1))
    np.testing.assert_allclose(as_numpy(on_xp), pipe(x, train=True, rng=np.random.default_rng(2)),
                               atol=1e-6)


def test_pipeline_rejects_wrong_input():
    ds = rgb_dataset(4)
    pipe = T.Pipeline.for_dataset(ds, (3, 32, 32))
    with pytest.raises(ShapeError, match=r"expected uint8 images of shape \(B, 3, 32, 32\), got float32"):
        pipe(ds.images.astype(np.float32), train=False)
    with pytest.raises(ShapeError, match="got uint8 .4, 3, 28, 28."):
        pipe(np.zeros((4, 3, 28, 28), np.uint8), train=False)
    with pytest.raises(ShapeError, match="in_channels=3"):
        T.Pipeline.for_dataset(ds, (1, 32, 32))


@pytest.mark.parametrize("shape, padding, size", [
    ((2, 1, 28, 28), ((6, 6), (6, 6)), (32, 32)),      # 28 on a 40 canvas: a 2-pixel border
    ((2, 3, 32, 32), ((4, 4), (4, 4)), (32, 32)),      # the image itself
    ((1, 3, 36, 36), ((0, 0), (0, 0)), (32, 32)),      # "crop": a slice
    ((1, 2, 9, 12), ((3, 0), (1, 4)), (7, 10)),        # uneven borders, both ways
    ((1, 2, 10, 10), 2, (5, 14)),                      # crop one axis, pad the other
])
def test_center_crop_padded_is_the_centre_of_the_padded_batch(xp, shape, padding, size):
    x = xp.asarray(np.random.default_rng(0).integers(1, 255, shape).astype(np.uint8))
    want = T.center_crop(T.pad(x, padding), size)
    got = T.center_crop_padded(x, padding, size)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(as_numpy(got), as_numpy(want))


@pytest.mark.parametrize("shape, padding, size", [
    ((3, 1, 28, 28), ((6, 6), (6, 6)), (32, 32)),      # grey 28 on a 40 canvas
    ((2, 3, 32, 32), ((4, 4), (4, 4)), (32, 32)),      # CIFAR-10's pad-4-and-crop
    ((2, 3, 36, 36), ((0, 0), (0, 0)), (32, 32)),      # no border at all
    ((2, 2, 9, 12), ((3, 0), (1, 4)), (7, 10)),        # uneven borders, both ways
])
@pytest.mark.parametrize("view", ["centre", "random", "random + lighting"])
def test_crop_standardize_is_crop_then_standardize(xp, shape, padding, size, view):
    """The pipeline's last steps together (one kernel on a GPU) give the steps' own bits."""
    rng = np.random.default_rng(5)
    B, C = shape[:2]
    x = xp.asarray(rng.integers(0, 256, shape).astype(np.uint8))
    mean, std = rng.random(C), rng.random(C) + 0.5
    offset = rng.normal(0, 0.1, (B, C)) if "lighting" in view else None
    constants = [xp.asarray(c) for c in T.standardize_constants(x, mean, std, offset)]
    canvas = T.pad(x, padding)
    if view == "centre":
        got = T.crop_standardize(x, padding, size, constants)
        want = T.standardize(T.center_crop(canvas, size), mean, std)
    else:
        top, left, flip = T.random_crop_params(rng, B, canvas.shape[2:], size)
        flip[0] = not flip[1]                           # one image reflected, one not
        got = T.crop_standardize(x, padding, size, constants, top, left, flip)
        want = T.standardize(T.crop(canvas, top, left, size, flip), mean, std, offset)
    assert got.dtype == want.dtype == xp.float32 and got.shape == (B, C) + size
    assert as_numpy(got).tobytes() == as_numpy(want).tobytes()


def test_staged_buffers_give_the_pipelines_own_input(standin):
    """What a step replayed as a CUDA graph copies in (``staged``: the crop table and the
    lighting shift, drawn from the step's generator) and reads (``from_staged``) makes the
    same input as ``__call__`` with the same generator, bit for bit, on the device."""
    import kernel_references
    kernel_references.register(standin)
    xp = standin.cupy
    rng = np.random.default_rng(3)
    data = ArrayDataset(rng.integers(0, 256, (6, 3, 32, 32)).astype(np.uint8),
                        rng.integers(0, 10, 6), [str(k) for k in range(10)])
    images, _ = data.get_batch(np.arange(6))
    for augment, lighting in ((False, False), (True, False), (True, True), (False, True)):
        pipe = T.Pipeline.for_dataset(data, (3, 32, 32), augment=augment, lighting=lighting)
        want = pipe(images, train=True, rng=np.random.default_rng([5, 1]), xp=xp)
        staged = pipe.staged(images, True, np.random.default_rng([5, 1]))
        assert set(staged) == {k for k, on in (("index", augment), ("shift", lighting)) if on}
        got = pipe.from_staged(xp.asarray(images), {k: xp.asarray(v) for k, v in staged.items()})
        assert np.array_equal(standin.host_arrays(got), standin.host_arrays(want))


def test_staged_buffers_refuse_a_pipeline_that_resizes():
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (4, 1, 16, 16)).astype(np.uint8),
                        rng.integers(0, 10, 4), [str(k) for k in range(10)])
    pipe = T.Pipeline.for_dataset(data, (1, 32, 32))
    with pytest.raises(ShapeError, match="resizes"):
        pipe.staged(data.get_batch(np.arange(4))[0], True, rng)
    x = np.zeros((2, 1, 32, 32), dtype=np.uint8)          # NumPy: no kernel reads a table
    with pytest.raises(ShapeError, match="crop table"):
        T.crop_standardize(x, 0, (32, 32), pipe._constants(x), index=np.zeros((2, 64)))
