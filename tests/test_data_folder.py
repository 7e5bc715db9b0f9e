"""Image folders and image files: PNG/JPEG made here, read back with the paper's preprocessing."""
import numpy as np
import pytest
from PIL import Image

from image_sources import photo
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


# ----------------------------------------------------------------------------- worker processes


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
