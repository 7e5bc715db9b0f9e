"""CIFAR-10 binary version: an archive in the exact official layout, made here, read back."""
import io
import tarfile

import numpy as np
import pytest

from tinyalexnet.datasets import cifar10, load_dataset
from tinyalexnet.datasets.download import md5_of_file
from tinyalexnet.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def record_bytes(image, label):
    """One record written out from the format's definition: label, R plane, G plane, B plane."""
    return bytes([label]) + image[0].tobytes() + image[1].tobytes() + image[2].tobytes()


def make_archive(path, per_file=7, seed=0, extra_members=()):
    """cifar-10-binary.tar.gz as published (smaller batches); returns the images and labels."""
    rng = np.random.default_rng(seed)
    contents, truth = {}, {"train": ([], []), "test": ([], [])}
    for split, files in cifar10.FILES.items():
        for name in files:
            images = rng.integers(0, 256, (per_file, 3, 32, 32)).astype(np.uint8)
            labels = rng.integers(0, 10, per_file).astype(np.uint8)
            contents[name] = b"".join(record_bytes(im, lab) for im, lab in zip(images, labels))
            truth[split][0].append(images)
            truth[split][1].append(labels)
    contents["batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-bin")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in contents.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra_members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return {s: (np.concatenate(i), np.concatenate(l)) for s, (i, l) in truth.items()}


def test_archive_parsed_back_to_the_same_pixels_and_labels(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    truth = make_archive(archive)
    for split, n in (("train", 35), ("test", 7)):
        ds = cifar10.load_cifar10(split, data_dir=tmp_path, md5=md5_of_file(archive))
        assert len(ds) == n and ds.channels == 3 and ds.classes == CLASSES
        np.testing.assert_array_equal(ds.images, truth[split][0])
        np.testing.assert_array_equal(ds.labels, truth[split][1])
    assert (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").is_file()
    # the red plane really is channel 0: pixel (row 1, col 2) of image 0's green plane
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert raw[1 + 1024 + 1 * 32 + 2] == truth["train"][0][0, 1, 1, 2]


def test_download_from_url_and_md5(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    archive = server / "cifar-10-binary.tar.gz"
    truth = make_archive(archive, per_file=3)
    target = tmp_path / "data"
    ds = cifar10.load_cifar10("test", data_dir=target, download=True, url=archive.as_uri(),
                              md5=md5_of_file(archive))
    np.testing.assert_array_equal(ds.images, truth["test"][0])
    assert (target / "cifar-10-binary.tar.gz").is_file()


def test_download_with_wrong_md5_is_deleted(tmp_path):
    archive = tmp_path / "served.tar.gz"
    make_archive(archive, per_file=2)
    target = tmp_path / "data"
    with pytest.raises(DataError) as err:
        cifar10.load_cifar10("train", data_dir=target, download=True, url=archive.as_uri())
    message = str(err.value)
    assert "\n" not in message and cifar10.MD5 in message and md5_of_file(archive) in message
    assert not (target / "cifar-10-binary.tar.gz").exists()
    assert not (target / "cifar-10-batches-bin").exists()


def test_bad_archive_in_the_cache_is_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "downloads_dir", lambda name: tmp_path / name)
    cache = tmp_path / "cifar10"
    cache.mkdir()
    (cache / "cifar-10-binary.tar.gz").write_bytes(b"half a download")
    with pytest.raises(DataError, match="MD5 mismatch.*deleted"):
        cifar10.load_cifar10("train")
    assert not (cache / "cifar-10-binary.tar.gz").exists()


def test_archive_of_the_user_with_wrong_md5_is_kept(tmp_path):
    make_archive(tmp_path / "cifar-10-binary.tar.gz", per_file=2)
    with pytest.raises(DataError, match=f"expected {cifar10.MD5}"):
        cifar10.load_cifar10("train", data_dir=tmp_path)
    assert (tmp_path / "cifar-10-binary.tar.gz").exists()


def unsafe(name, kind="file"):
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return info, None
    info.size = 4
    return info, b"evil"


@pytest.mark.parametrize("member", [
    unsafe("cifar-10-batches-bin/../../escaped.txt"),
    unsafe("/tmp/tinyalexnet-absolute.txt"),
    unsafe("cifar-10-batches-bin/link", "symlink"),
    unsafe("elsewhere.txt"),
])
def test_path_traversal_and_links_are_refused(tmp_path, member):
    data_dir = tmp_path / "a" / "b"
    data_dir.mkdir(parents=True)
    archive = data_dir / "cifar-10-binary.tar.gz"
    make_archive(archive, per_file=1, extra_members=[member])
    with pytest.raises(DataError) as err:
        cifar10.load_cifar10("train", data_dir=data_dir, md5=md5_of_file(archive))
    assert "refusing member" in str(err.value) and member[0].name in str(err.value)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "a" / "escaped.txt").exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-binary.tar.gz"]


def test_truncated_archive_leaves_nothing_behind(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_archive(archive, per_file=50)
    archive.write_bytes(archive.read_bytes()[:-3000])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        cifar10.load_cifar10("train", data_dir=tmp_path, md5=md5_of_file(archive))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-binary.tar.gz"]


def test_truncated_batch_file(tmp_path):
    make_archive(tmp_path / "a.tar.gz", per_file=2)
    cifar10.safe_extract(tmp_path / "a.tar.gz", tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert str(batch) in str(err.value)
    assert "6046 bytes is not a whole number of 3073-byte records" in str(err.value)


def test_bad_label_byte(tmp_path):
    data = bytearray(record_bytes(np.zeros((3, 32, 32), np.uint8), 3) * 3)
    data[2 * 3073] = 200
    with pytest.raises(DataError, match="record 2 has label byte 200, expected 0..9"):
        cifar10.parse_batch(bytes(data), "x.bin")


def test_files_found_unpacked_or_in_the_folder_itself(tmp_path):
    truth = make_archive(tmp_path / "a.tar.gz", per_file=2)
    folder = cifar10.safe_extract(tmp_path / "a.tar.gz", tmp_path / "x")
    ds = load_dataset("cifar10", "test", data_dir=folder)          # pointing at the folder itself
    np.testing.assert_array_equal(ds.labels, truth["test"][1])


def test_missing_cifar_says_how_to_get_it(tmp_path, capsys):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    message = str(err.value)                       # in the Python API's words
    assert "\n" not in message and "cifar-10-binary.tar.gz" in message
    assert "add download=True" in message and "give data_dir" in message and "--" not in message
    from cli_refusals import user_error            # and in the command line's
    _, line = user_error(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out",
                          str(tmp_path / "run")], capsys, "add --download", "give --data-dir")
    assert "download=True" not in line and not (tmp_path / "run").exists()


def test_a_folder_that_cannot_be_written_is_not_called_a_corrupt_archive(tmp_path, monkeypatch):
    """Unpacking into a place that is a file, or onto a full disk, names the folder and the
    reason in one line, and leaves no partial folder behind; the archive is not blamed."""
    make_archive(tmp_path / "a.tar.gz", per_file=2)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError) as err:
        cifar10.safe_extract(tmp_path / "a.tar.gz", a_file / "data")
    message = str(err.value)
    assert message.startswith("cannot unpack a.tar.gz into ") and str(a_file / "data") in message
    assert "corrupt" not in message and "\n" not in message

    def full_disk(src, dst, length=0):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cifar10.shutil, "copyfileobj", full_disk)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="No space left on device") as err:
        cifar10.safe_extract(tmp_path / "a.tar.gz", dest)
    assert "corrupt" not in str(err.value) and str(dest) in str(err.value)
    assert list(dest.iterdir()) == []                       # no .partial folder left
