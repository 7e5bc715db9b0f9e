"""The input pipeline: every step against a direct (loop) reference, and the Pipeline as a whole."""
import json

import numpy as np
import pytest
from PIL import Image

from tinyalexnet import transforms as T
from tinyalexnet.backend import as_numpy
from tinyalexnet.datasets import ArrayDataset, load_dataset
from tinyalexnet.errors import DataError, ShapeError, TinyAlexNetError


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

@pytest.mark.parametrize("source, target, expected", [
    (28, 32, ("pad", None, 6, 6)),          # 28 -> 32, plus 4 to crop from
    (32, 32, ("pad", None, 4, 4)),          # CIFAR on the 32x32 models: pad-4-and-crop
    (29, 32, ("pad", None, 5, 6)),
    (28, 227, ("upsample", 227, 28, 28)),   # Fashion-MNIST on the paper's model
    (256, 227, ("crop", None, 0, 0)),       # the paper
    (36, 32, ("crop", None, 0, 0)),
    (300, 227, ("downsample", 256, 0, 0)),
    (256, 32, ("downsample", 36, 0, 0)),
])
def test_plan(source, target, expected):
    assert T.plan(source, target) == expected


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


def test_load_files_converts_to_the_source_format(tmp_path):
    pipe = T.Pipeline.for_dataset(load_dataset("fashion-mnist-subset", "test"), (1, 32, 32))
    digit = np.zeros((28, 28), np.uint8)
    digit[5:20, 10:14] = 255
    Image.fromarray(digit).save(tmp_path / "a.png")
    Image.fromarray(np.full((60, 90, 3), 200, np.uint8)).save(tmp_path / "b.jpg")
    batch = pipe.load_files([tmp_path / "a.png", tmp_path / "b.jpg"])
    assert batch.shape == (2, 1, 28, 28) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0, 0], digit)
    assert abs(int(batch[1].mean()) - 200) <= 2
    assert pipe(batch, train=False).shape == (2, 1, 32, 32)
    (tmp_path / "c.png").write_text("no picture")
    with pytest.raises(DataError, match="c.png: cannot decode"):
        pipe.load_files([tmp_path / "c.png"])
