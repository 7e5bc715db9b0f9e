"""IDX data sets (MNIST, Fashion-MNIST), the embedded subset, downloads and load_dataset."""
import dataclasses
import gzip
import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from tinyalexnet.datasets import DATASETS, describe, load_dataset
from tinyalexnet.datasets import download as dl
from tinyalexnet.datasets import embedded, idx
from tinyalexnet.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_system = pytest.mark.skipif(
    not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({SYSTEM_DIR})")
REPO = Path(__file__).resolve().parents[1]


def idx_bytes(array, dtype_code=0x08, ndim=None):
    """IDX bytes written out by hand from the format's definition."""
    array = np.asarray(array, np.uint8)
    ndim = array.ndim if ndim is None else ndim
    return bytes([0, 0, dtype_code, ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) \
        + array.tobytes()


def one_line(err):
    message = str(err.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------- the IDX format

def test_parse_idx_reads_header_and_values():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04" + bytes(range(24))
    out = idx.parse_idx(data, "hand.idx", ndim=3)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)


def test_write_idx_round_trip_and_reproducible(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 57).astype(np.uint8)
    images = rng.integers(0, 256, (57, 28, 28)).astype(np.uint8)
    for name, array in (("l.gz", labels), ("i.gz", images)):
        a = idx.write_idx(tmp_path / name, array)
        first = a.read_bytes()
        np.testing.assert_array_equal(idx.read_idx(a), array)
        assert gzip.decompress(first) == idx_bytes(array)            # exactly the format
        idx.write_idx(a, array)
        assert a.read_bytes() == first                               # same bytes every time


@pytest.mark.parametrize("mutate, expected", [
    (lambda b: b[:-5], "truncated: the header promises 3x4x4 = 48 bytes of data, the file holds 43"),
    (lambda b: b + b"\x00\x00", "2 unexpected bytes after"),
    (lambda b: b"\x01" + b[1:], "bad magic number 0x01000803"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type 0x0d"),
    (lambda b: b[:3] + b"\x01" + b[4:], "53 unexpected bytes after the 3 = 3 bytes"),  # ndim 3 -> 1
    (lambda b: b[:10], "truncated header"),
    (lambda b: b[:3], "too short"),
])
def test_corrupt_idx_is_a_one_line_error_naming_the_file(tmp_path, mutate, expected):
    data = idx_bytes(np.zeros((3, 4, 4)))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(data))
    with pytest.raises(DataError) as err:
        idx.read_idx(path)
    message = one_line(err)
    assert str(path) in message and expected in message


def test_wrong_number_of_dimensions(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(DataError, match="1 dimensions .* expected 3"):
        idx.read_idx(path, ndim=3)


@pytest.mark.parametrize("content", ["cut", "text"])
def test_broken_gzip(tmp_path, content):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = gzip.compress(idx_bytes(np.zeros((20, 28, 28))))
    path.write_bytes(good[: len(good) // 2] if content == "cut" else b"<html>not found</html>")
    with pytest.raises(DataError) as err:
        idx.read_idx(path)
    assert str(path) in one_line(err) and "gzip" in str(err.value)


# ----------------------------------------------------------------------------- the embedded subset

def test_embedded_subset_is_class_balanced_and_verified():
    for split, per_class in (("train", 600), ("test", 100)):
        ds = load_dataset("fashion-mnist-subset", split)      # checks the contents' MD5s
        assert len(ds) == 10 * per_class and ds.channels == 1
        assert ds.images.shape == (10 * per_class, 1, 28, 28) and ds.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), [per_class] * 10)
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
        images, labels = ds.get_batch(np.array([0, 5]))
        assert images.shape == (2, 1, 28, 28) and labels.dtype == np.int64
        assert 0 < images.mean() < 255                             # real pictures, not blank


def test_embedded_subset_matches_readme():
    """data/README.md lists the files' MD5s; they must be the committed files'."""
    readme = (REPO / "data" / "README.md").read_text()
    cell = r"\s*\|\s*"
    rows = re.findall(r"\|\s*([\w-]+\.gz)" + cell + r"(\d[\d,]*)" + cell + r"([0-9a-f]{32})" + cell
                      + r"([0-9a-f]{32})\s*\|", readme)
    assert len(rows) == 4
    for name, count, md5, raw in rows:
        path = embedded.SUBSET_DIR / name
        assert dl.md5_of_file(path) == md5
        assert hashlib.md5(idx.read_bytes(path)).hexdigest() == raw == embedded.SUBSET.raw_md5[name]
        assert len(idx.read_idx(path)) == int(count.replace(",", ""))


def test_corrupted_subset_file_is_refused(tmp_path):
    for name in embedded.SUBSET.files("test"):
        (tmp_path / name).write_bytes((embedded.SUBSET_DIR / name).read_bytes())
    labels = idx.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10                                 # one wrong label
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="MD5 of its contents expected"):
        embedded.load_subset("test", data_dir=tmp_path)


def test_subset_selection_rule():
    labels = np.repeat(np.arange(3), [5, 7, 6])
    keep = embedded.select(labels, 4, np.random.default_rng(3))
    assert np.all(np.diff(keep) > 0)                                 # original order
    np.testing.assert_array_equal(np.bincount(labels[keep]), [4, 4, 4])
    np.testing.assert_array_equal(keep, embedded.select(labels, 4, np.random.default_rng(3)))
    with pytest.raises(DataError, match="fewer than 6"):
        embedded.select(labels, 6, np.random.default_rng(3))


# ----------------------------------------------------------------------------- the real files

@needs_system
def test_system_fashion_mnist_files():
    for split, n in (("train", 60000), ("test", 10000)):
        for name in idx.FASHION_MNIST.files(split):
            data = idx.read_bytes(SYSTEM_DIR / name)
            assert hashlib.md5(data).hexdigest() == idx.FASHION_MNIST.raw_md5[name]
        ds = load_dataset("fashion-mnist", split, data_dir=SYSTEM_DIR)
        assert ds.images.shape == (n, 1, 28, 28)
        np.testing.assert_array_equal(np.bincount(ds.labels), [n // 10] * 10)


@needs_system
def test_rebuilding_the_subset_gives_the_committed_images(tmp_path):
    report = embedded.rebuild(SYSTEM_DIR, tmp_path)
    for name, (count, _, raw) in report.items():
        assert raw == embedded.SUBSET.raw_md5[name]
        np.testing.assert_array_equal(idx.read_idx(tmp_path / name),
                                      idx.read_idx(embedded.SUBSET_DIR / name))


# ----------------------------------------------------------------------------- finding and downloading

def fake_source(tmp_path, n=30):
    """A small MNIST-like data set served from a file:// URL, with its MD5s."""
    server = tmp_path / "server"
    server.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        img, lab = idx.FASHION_MNIST.files(split)
        arrays[img] = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        arrays[lab] = (np.arange(n) % 10).astype(np.uint8)
    for name, array in arrays.items():
        idx.write_idx(server / name, array)
    source = dataclasses.replace(
        idx.FASHION_MNIST, name="fake", url=server.as_uri() + "/", raw_md5={},
        md5={name: dl.md5_of_file(server / name) for name in arrays})
    return source, server, arrays


def test_download_verifies_and_caches(tmp_path, monkeypatch):
    source, server, arrays = fake_source(tmp_path)
    target = tmp_path / "data"
    ds = idx.load_idx(source, "train", data_dir=target, download=True)
    np.testing.assert_array_equal(ds.images[:, 0], arrays["train-images-idx3-ubyte.gz"])
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz",
                                                       "train-labels-idx1-ubyte.gz"]

    def no_network(url, dest):
        raise AssertionError(f"fetched {url} although it is cached")
    monkeypatch.setattr(dl, "fetch", no_network)
    again = idx.load_idx(source, "train", data_dir=target, download=True)
    np.testing.assert_array_equal(again.labels, ds.labels)


def test_md5_mismatch_deletes_the_download(tmp_path):
    source, server, _ = fake_source(tmp_path)
    name = "t10k-images-idx3-ubyte.gz"
    wrong = dataclasses.replace(source, md5=dict(source.md5, **{name: "0" * 32}))
    target = tmp_path / "data"
    with pytest.raises(DataError) as err:
        idx.load_idx(wrong, "test", data_dir=target, download=True)
    message = one_line(err)
    assert str(target / name) in message and "expected " + "0" * 32 in message
    assert "got " + source.md5[name] in message and "deleted" in message
    assert not (target / name).exists() and not list(target.glob("*.part"))


def test_bad_cached_file_is_replaced(tmp_path):
    source, server, arrays = fake_source(tmp_path)
    path = tmp_path / "cache" / "x.gz"
    path.parent.mkdir()
    path.write_bytes(b"stale")
    url = (server / "t10k-labels-idx1-ubyte.gz").as_uri()
    dl.download(url, path, source.md5["t10k-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(idx.read_idx(path), arrays["t10k-labels-idx1-ubyte.gz"])


@pytest.mark.parametrize("damage", ["cut short", "other contents"])
def test_a_damaged_file_where_downloads_go_is_fetched_again(tmp_path, damage):
    source, server, arrays = fake_source(tmp_path)
    source = dataclasses.replace(source, raw_md5={          # contents checked, as for the real
        n: hashlib.md5(idx.read_bytes(server / n)).hexdigest() for n in source.md5})
    target = tmp_path / "data"
    target.mkdir()
    images, labels = source.files("test")
    (target / images).write_bytes((server / images).read_bytes())
    good = (server / labels).read_bytes()
    if damage == "cut short":
        (target / labels).write_bytes(good[:len(good) // 2])
    else:
        idx.write_idx(target / labels, arrays[labels][::-1])     # a readable file, but not it
    with pytest.raises(DataError) as err:                       # without download: what to do
        idx.load_idx(source, "test", data_dir=target)
    message = one_line(err)
    assert str(target / labels) in message and "add download=True to replace it" in message
    ds = idx.load_idx(source, "test", data_dir=target, download=True)
    np.testing.assert_array_equal(ds.labels, arrays[labels])
    assert (target / labels).read_bytes() == good
    assert sorted(p.name for p in target.iterdir()) == sorted([images, labels])   # no .part


def test_a_damaged_file_elsewhere_is_named_with_what_to_do(tmp_path):
    """A file outside the download folder (here data_dir/fake/) is not ours to delete."""
    source, server, arrays = fake_source(tmp_path)
    source = dataclasses.replace(source, raw_md5={
        n: hashlib.md5(idx.read_bytes(server / n)).hexdigest() for n in source.md5})
    target = tmp_path / "data"
    (target / "fake").mkdir(parents=True)
    for name in source.files("test"):
        (target / "fake" / name).write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(DataError) as err:
        idx.load_idx(source, "test", data_dir=target, download=True)
    message = one_line(err)
    assert str(target / "fake" / source.files("test")[0]) in message
    assert "replace it with the official file" in message and "download=True" in message
    assert (target / "fake" / source.files("test")[0]).read_bytes() == b"\x1f\x8b damaged"


def test_unreachable_url_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as err:
        dl.download((tmp_path / "nowhere.gz").as_uri(), tmp_path / "d" / "x.gz", "0" * 32)
    assert "could not download" in one_line(err)
    assert not (tmp_path / "d" / "x.gz").exists() and not (tmp_path / "d" / "x.gz.part").exists()


def test_found_file_with_wrong_contents_is_refused(tmp_path):
    source, server, _ = fake_source(tmp_path)
    for name in source.files("test"):
        (tmp_path / name).write_bytes((server / name).read_bytes())
    with pytest.raises(DataError, match="not the official Fashion-MNIST file"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_uncompressed_files_are_read(tmp_path):
    source, server, arrays = fake_source(tmp_path)
    for name in source.files("test"):
        (tmp_path / name.removesuffix(".gz")).write_bytes(idx.read_bytes(server / name))
    ds = idx.load_idx(source, "test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.labels, arrays["t10k-labels-idx1-ubyte.gz"])


def test_label_count_must_match(tmp_path):
    idx.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    source = dataclasses.replace(idx.MNIST, raw_md5={})
    with pytest.raises(DataError, match="3 labels for the 4 images"):
        idx.load_idx(source, "test", data_dir=tmp_path)


# ----------------------------------------------------------------------------- load_dataset

def test_missing_data_set_says_how_to_get_it(tmp_path):
    """In the Python API's words (the command line's: test_cli.py)."""
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    message = one_line(err)
    for hint in ("add download=True", "apt-get install dataset-fashion-mnist", "give data_dir",
                 "train-images-idx3-ubyte.gz", str(tmp_path)):
        assert hint in message
    assert "--" not in message                      # no command-line option in the API's words
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert "download=True" in one_line(err) and "ossci-datasets" in str(err.value)


def test_load_dataset_rejects_unknown_names():
    assert set(DATASETS) == {"fashion-mnist-subset", "fashion-mnist", "mnist", "cifar10", "folder",
                             "store"}
    with pytest.raises(DataError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_dataset("fashion-mnist-subset", "dev")
    with pytest.raises(DataError, match="no options size"):
        load_dataset("mnist", size=36)
    assert all(describe(name).endswith(".") for name in DATASETS)
