"""Reading a store: batches as asked, and every kind of damage refused in one line."""
import json

import numpy as np
import pytest

from image_sources import SORTED, class_folders
from tinyalexnet.datasets import load_dataset
from tinyalexnet.datasets import store as st
from tinyalexnet.datasets.prepare import prepare
from tinyalexnet.datasets.split import split_validation
from tinyalexnet.errors import DataError

SIZE = 20


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    class_folders(root / "src" / "train", per_class=4)
    class_folders(root / "src" / "test", per_class=1)
    prepare(root / "src", root / "store", size=SIZE, workers=0, chunk_images=3,
            log=lambda *a: None)
    return root


@pytest.fixture
def copy(made, tmp_path):
    import shutil
    shutil.copytree(made / "store", tmp_path / "store")
    return tmp_path / "store"


def one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


def test_batches_come_in_the_order_asked(made):
    ds = load_dataset("store", "train", data_dir=made / "store")
    raw = np.load(made / "store" / "train" / st.IMAGES, allow_pickle=False)
    labels = np.load(made / "store" / "train" / st.LABELS, allow_pickle=False)
    idx = np.array([11, 0, 5, 5, 3])
    images, got = ds.get_batch(idx)
    np.testing.assert_array_equal(images, raw[idx])
    np.testing.assert_array_equal(got, labels[idx])
    assert ds.channels == 3 and ds.image_size == (SIZE, SIZE) and ds.classes == SORTED
    state = ds.__getstate__()                    # what a copy for another process carries:
    assert state["images"] is None               # not the images' bytes; it maps the file again
    copy = type(ds).__new__(type(ds))
    copy.__setstate__(state)
    np.testing.assert_array_equal(copy.get_batch(idx)[0], raw[idx])
    train, val = split_validation(ds, 0.25, seed=0)                  # a Subset view
    assert len(train) + len(val) == 12 and val.get_batch([0])[0].shape == (1, 3, SIZE, SIZE)


def test_a_damaged_image_is_refused_naming_the_chunk(copy):
    path = copy / "train" / st.IMAGES
    header = len(st.npy_header((12, 3, SIZE, SIZE)))
    row = 7                                                         # chunk 2 (rows 6-8)
    data = bytearray(path.read_bytes())
    data[header + row * 3 * SIZE * SIZE + 100] ^= 1
    path.write_bytes(bytes(data))
    ds = load_dataset("store", "train", data_dir=copy)               # opens: sizes are right
    ds.get_batch([0, 1, 6, 8])                                       # other rows still read
    with pytest.raises(DataError) as err:
        ds.get_batch([1, row])
    assert f"{path}: chunk 2 (rows 6 to 8) is damaged: row 7" in one_line(err)
    with pytest.raises(DataError) as err:
        st.verify_store(copy / "train")
    assert f"{path}: chunk 2" in one_line(err)
    with pytest.raises(DataError, match="chunk 2"):
        load_dataset("store", "train", data_dir=copy, verify="full")


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / st.IMAGES).write_bytes((d / st.IMAGES).read_bytes()[:-10]),
     "the manifest promises"),
    (lambda d: (d / st.LABELS).write_bytes((d / st.LABELS).read_bytes()[:-1] + b"\x01"),
     "labels.npy: SHA-256"),
    (lambda d: (d / st.CRC32).unlink(), "crc32.npy: missing"),
    (lambda d: (d / st.MANIFEST).write_text("{"), "not a readable store manifest"),
    (lambda d: (d / st.MANIFEST).unlink(), "not a store (no manifest.json)"),
    (lambda d: (d / st.MANIFEST).write_text(json.dumps(
        dict(json.loads((d / st.MANIFEST).read_text()), format_version=99))),
     "format version 99"),
])
def test_a_damaged_store_is_refused_naming_the_file(copy, damage, expected):
    damage(copy / "train")
    with pytest.raises(DataError) as err:
        load_dataset("store", "train", data_dir=copy)
    assert expected in one_line(err) and str(copy / "train") in str(err.value)


def test_missing_store_and_size_mismatch(made, tmp_path):
    with pytest.raises(DataError, match="needs the store's folder"):
        load_dataset("store")
    with pytest.raises(DataError, match="no such store folder; prepare"):
        load_dataset("store", data_dir=tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset("store", data_dir=made / "store", size=36)
    assert "holds 20x20 images, this model reads 36x36" in one_line(err)


def test_test_split_must_share_the_training_classes(copy):
    m = json.loads((copy / "test" / st.MANIFEST).read_text())
    m["classes"] = ["a", "b", "c"]
    (copy / "test" / st.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(DataError, match="differ from"):
        load_dataset("store", "test", data_dir=copy)


def test_journal_lines_carry_their_own_checksum(tmp_path):
    line = st.journal_line({"chunk": 4, "sha256": "ab"})
    (tmp_path / st.JOURNAL).write_text(line + line.replace('"ab"', '"ac"') + line[:20])
    assert list(st.read_journal(tmp_path)) == [4]
