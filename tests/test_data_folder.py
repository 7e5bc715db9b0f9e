"""Image folders and image files: PNG/JPEG made here, read back with the paper's preprocessing."""
import numpy as np
import pytest
from PIL import Image

from tinyalexnet.datasets import ImageFolder, load_dataset, load_image_file, load_image_files
from tinyalexnet.errors import DataError

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def make_tree(root, per_class=2, size=(20, 30), fmt="png"):
    """root/<colour>/<k>.<fmt>: solid colour images of height, width = size."""
    for name, rgb in COLOURS.items():
        for k in range(per_class):
            save(root / name / f"{k}.{fmt}", np.broadcast_to(np.array(rgb), size + (3,)))


def test_folder_lists_lazily_and_decodes_batches(tmp_path):
    make_tree(tmp_path / "train")
    make_tree(tmp_path / "test", per_class=1, fmt="jpg")
    train = load_dataset("folder", "train", data_dir=tmp_path, size=16)
    assert train.classes == ["blue", "green", "red"] and len(train) == 6 and train.channels == 3
    images, labels = train.get_batch(np.array([5, 0, 2]))
    assert images.shape == (3, 3, 16, 16) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [2, 0, 1])
    np.testing.assert_array_equal(images[0, :, 3, 4], COLOURS["red"])          # PNG: exact
    test = load_dataset("folder", "test", data_dir=tmp_path, size=16)
    assert test.classes == train.classes and len(test) == 3
    jpeg, labels = test.get_batch(np.arange(3))
    np.testing.assert_allclose(jpeg[1].reshape(3, -1).mean(1), COLOURS["green"], atol=3)  # lossy


def test_shorter_side_then_centre_crop(tmp_path):
    """A 20x40 image, left half red, right half blue: size 10 -> 10x20 -> columns 5..14."""
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = COLOURS["red"]
    img[:, 20:] = COLOURS["blue"]
    save(tmp_path / "wide.png", img)
    out = load_image_file(tmp_path / "wide.png", 3, 10)
    assert out.shape == (3, 10, 10)
    np.testing.assert_array_equal(out[:, :, 0].T, [COLOURS["red"]] * 10)      # resized col 5: red
    np.testing.assert_array_equal(out[:, :, 9].T, [COLOURS["blue"]] * 10)     # resized col 14: blue
    tall = load_image_file(tmp_path / "wide.png", 3, (10, 5))                  # covers, then centre
    assert tall.shape == (3, 10, 5)


def test_grey_and_large_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(100, 156, (300, 400, 3)).astype(np.uint8)
    save(tmp_path / "photo.jpg", photo)
    grey = load_image_file(tmp_path / "photo.jpg", 1, 64)        # JPEG draft mode + resize
    assert grey.shape == (1, 64, 64) and abs(grey.mean() - 127.5) < 3
    rgb = load_image_file(tmp_path / "photo.jpg", 3)             # no size: as stored
    assert rgb.shape == (3, 300, 400)


def test_folder_of_grey_images(tmp_path):
    make_tree(tmp_path / "train")
    ds = ImageFolder(tmp_path / "train", size=8, channels=1)
    images, _ = ds.get_batch([4])
    expected = round(0.299 * 255)                                 # Pillow's L from pure red
    assert images.shape == (1, 1, 8, 8) and abs(int(images[0, 0, 0, 0]) - expected) <= 1


@pytest.mark.parametrize("content", [b"this is not a picture", b""])
def test_non_image_file_is_named(tmp_path, content):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_image_file(path, 3, 32)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_broken_file_fails_only_when_its_batch_is_read(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "red" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = ImageFolder(tmp_path, size=8)
    ds.get_batch([0, 1])                                           # good files still load
    with pytest.raises(DataError, match="zz.png: cannot decode"):
        ds.get_batch([len(ds) - 1])


def test_missing_file_and_folder_as_image(tmp_path):
    with pytest.raises(DataError, match="no such image file"):
        load_image_file(tmp_path / "absent.png")
    with pytest.raises(DataError, match="is a folder"):
        load_image_file(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        ImageFolder(tmp_path / "absent")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(tmp_path / "empty")
    save(tmp_path / "one" / "cat" / "1.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="only one class folder .'cat'."):
        ImageFolder(tmp_path / "one")
    save(tmp_path / "hole" / "cat" / "1.png", np.zeros((4, 4, 3)))
    (tmp_path / "hole" / "dog").mkdir()
    with pytest.raises(DataError, match="dog: class folder with no images"):
        ImageFolder(tmp_path / "hole")
    make_tree(tmp_path / "notes")
    (tmp_path / "notes" / "red" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="readme.txt: not an image file name"):
        ImageFolder(tmp_path / "notes")


def test_hidden_files_are_ignored_and_test_classes_follow_train(tmp_path):
    make_tree(tmp_path / "train")
    (tmp_path / "train" / "red" / ".DS_Store").write_bytes(b"\0")
    save(tmp_path / "val" / "red" / "1.png", np.zeros((4, 4, 3)))      # val/ instead of test/
    test = load_dataset("folder", "test", data_dir=tmp_path, size=4)
    assert test.classes == ["blue", "green", "red"] and test.labels.tolist() == [2]
    save(tmp_path / "val" / "purple" / "1.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="'purple' is not one of the 3 training classes"):
        load_dataset("folder", "test", data_dir=tmp_path)


def test_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="needs a data folder"):
        load_dataset("folder")
    with pytest.raises(DataError, match="train: no such folder.*train/<class>"):
        load_dataset("folder", data_dir=tmp_path)
    make_tree(tmp_path / "train")
    with pytest.raises(DataError, match="no test/ or val/ folder"):
        load_dataset("folder", "test", data_dir=tmp_path)


def test_load_image_files_makes_the_batch_a_pipeline_expects(tmp_path):
    """predict's path: any files -> uint8 (B, C, h, w) in the checkpoint's source shape."""
    digit = np.zeros((28, 28), np.uint8)
    digit[5:20, 10:14] = 255
    Image.fromarray(digit).save(tmp_path / "a.png")
    Image.fromarray(np.full((60, 90, 3), 200, np.uint8)).save(tmp_path / "b.jpg")
    batch = load_image_files([tmp_path / "a.png", tmp_path / "b.jpg"], (1, 28, 28))
    assert batch.shape == (2, 1, 28, 28) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0, 0], digit)
    assert abs(int(batch[1].mean()) - 200) <= 2                      # grey of a grey-ish JPEG
    assert load_image_files([], (3, 8, 5)).shape == (0, 3, 8, 5)
    (tmp_path / "c.png").write_text("no picture")
    with pytest.raises(DataError, match="c.png: cannot decode"):
        load_image_files([tmp_path / "c.png"], (1, 28, 28))


# ----------------------------------------------------------------------------- decoders, workers

from image_sources import jpeg_bytes, photo                                     # noqa: E402
from tinyalexnet.datasets import folder as folder_module, jpeg                  # noqa: E402

JPEG_CASES = {            # name: (height, width, Pillow save options, grey)
    "420": (75, 100, {"quality": 90}, False),
    "444": (60, 90, {"quality": 95, "subsampling": 0}, False),
    "422": (61, 77, {"quality": 85, "subsampling": 1}, False),
    "progressive": (80, 64, {"quality": 90, "progressive": True}, False),
    "grey": (70, 50, {"quality": 90}, True),
    "draft 1/2": (90, 110, {"quality": 90}, False),
    "draft 1/4": (150, 200, {"quality": 90}, False),
    "draft 1/8": (300, 400, {"quality": 90}, False),
}


@pytest.mark.parametrize("case", list(JPEG_CASES))
@pytest.mark.parametrize("channels", [3, 1])
def test_simplejpeg_gives_pillows_pixels(tmp_path, case, channels, monkeypatch):
    pytest.importorskip("simplejpeg")
    h, w, options, grey = JPEG_CASES[case]
    array = photo(np.random.default_rng(len(case)), h, w)
    if grey:
        array = array.mean(2).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(array, **options))
    fast_calls = []
    original = jpeg.decode
    monkeypatch.setattr(jpeg, "decode", lambda *a: fast_calls.append(a[-1]) or original(*a))
    for size in (32, (24, 40)):
        pillow = load_image_file(path, channels, size, decoder="pillow")
        fast = load_image_file(path, channels, size, decoder="simplejpeg")
        np.testing.assert_array_equal(fast, pillow)
    assert len(fast_calls) == 2                       # the fast path ran, and did not fall back
    from PIL import Image
    with Image.open(path) as img:                     # Pillow's own choice of scale at 32
        img.draft("RGB", (32, 32))
        assert fast_calls[0] == -(-w // img.size[0])
    if case.startswith("draft"):
        assert fast_calls[0] == int(case[-1])         # scaled while decoding


def test_odd_jpegs_fall_back_to_pillow(tmp_path):
    pytest.importorskip("simplejpeg")
    from PIL import Image
    cmyk = np.random.default_rng(0).integers(0, 255, (30, 40, 4)).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg")
    good = jpeg_bytes(photo(np.random.default_rng(1), 60, 80), quality=90)
    (tmp_path / "cut.jpg").write_bytes(good[:len(good) // 2])
    assert folder_module._load_fast(tmp_path / "cmyk.jpg", 3, (16, 16)) is None
    assert folder_module._load_fast(tmp_path / "cut.jpg", 3, (16, 16)) is None
    np.testing.assert_array_equal(load_image_file(tmp_path / "cmyk.jpg", 3, 16, "simplejpeg"),
                                  load_image_file(tmp_path / "cmyk.jpg", 3, 16, "pillow"))
    for decoder in ("simplejpeg", "pillow"):            # Pillow refuses it either way
        with pytest.raises(DataError, match="cut.jpg: cannot decode"):
            load_image_file(tmp_path / "cut.jpg", 3, 16, decoder)


def test_size_limits_hold_on_the_fast_path(tmp_path, monkeypatch):
    pytest.importorskip("simplejpeg")
    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg_bytes(photo(np.random.default_rng(2), 40, 300), quality=90))
    monkeypatch.setattr(folder_module, "MAX_SIDE", 100)
    messages = []
    for decoder in ("pillow", "simplejpeg"):
        with pytest.raises(DataError) as err:
            load_image_file(path, 3, 16, decoder)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "150x20 pixels is too large" in messages[0]  # at 1/2


def test_unknown_or_missing_decoder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown image decoder 'turbo'"):
        folder_module.resolve_decoder("turbo")
    monkeypatch.setattr(jpeg, "simplejpeg", None)
    assert folder_module.resolve_decoder("auto") == "pillow"
    with pytest.raises(DataError, match="pip install simplejpeg"):
        folder_module.resolve_decoder("simplejpeg")


def test_worker_processes_give_the_same_batches(tmp_path):
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        for k in range(5):
            save(tmp_path / name / f"{k}.jpg", photo(rng, 40 + k, 50))
    order = rng.permutation(10)
    alone = ImageFolder(tmp_path, size=16, workers=0).get_batch(order)
    with ImageFolder(tmp_path, size=16, workers=2) as ds:
        together = ds.get_batch(order)
        again = ds.get_batch(order[:3])
        assert ds._pool is not None
    np.testing.assert_array_equal(together[0], alone[0])
    np.testing.assert_array_equal(together[1], alone[1])
    np.testing.assert_array_equal(again[0], alone[0][:3])
    assert ds._pool is None


def test_a_broken_file_in_a_worker_is_one_line_naming_it(tmp_path):
    make_tree(tmp_path, per_class=3)
    (tmp_path / "red" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with ImageFolder(tmp_path, size=8, workers=2) as ds:
        with pytest.raises(DataError) as err:
            ds.get_batch(np.arange(len(ds)))
        assert "zz.png: cannot decode" in str(err.value) and "\n" not in str(err.value)
        assert ds.get_batch([0, 1])[0].shape == (2, 3, 8, 8)       # the pool still works


def test_default_workers(monkeypatch):
    from tinyalexnet.datasets import workers
    monkeypatch.setenv(workers.WORKERS_VARIABLE, "3")
    assert workers.default_workers() == 3
    monkeypatch.setenv(workers.WORKERS_VARIABLE, "many")
    with pytest.raises(DataError, match="TINYALEXNET_DATA_WORKERS='many'"):
        workers.default_workers()
    monkeypatch.delenv(workers.WORKERS_VARIABLE)
    monkeypatch.setattr(workers, "cores", lambda: 2)
    assert workers.default_workers() == 0              # one spare core: the prefetch thread
    monkeypatch.setattr(workers, "cores", lambda: 16)
    assert workers.default_workers() == 8
