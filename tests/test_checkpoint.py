"""Checkpoints: exact round trip, atomic writes, one-line errors for damaged or foreign files."""
import os
import zipfile

import numpy as np
import pytest

from tinyalexnet import checkpoint
from tinyalexnet.errors import CheckpointError
from tinyalexnet.layers import SoftmaxCrossEntropy
from tinyalexnet.models import get_model
from tinyalexnet.optim import SGD, Adam


def trained_small(seed=0, optimizer=Adam, classes=10):
    """A small model after two optimizer steps, so weights and optimizer state are non-trivial."""
    model = get_model("small", num_classes=classes, in_channels=1, seed=seed)
    opt = optimizer(model, lr=1e-3)
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    for _ in range(2):
        x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
        loss.forward(model.forward(x), rng.integers(0, classes, 4))
        model.backward(loss.backward())
        opt.step()
    return model, opt


def save_small(path, **kw):
    model, opt = trained_small(**kw)
    meta = dict(checkpoint.model_meta(model, "small"), epoch=1, note="hello")
    checkpoint.save(path, model, meta, opt)
    return model, opt


def test_round_trip_restores_weights_optimizer_and_dropout_counters(tmp_path):
    path = tmp_path / "c.npz"
    model, opt = save_small(path)
    meta_extra = model.get_extra_state()
    assert meta_extra["drop6"]["calls"] == 2   # two training forwards drew two masks
    checkpoint.save(path, model, dict(checkpoint.model_meta(model, "small"),
                                      extra_state=meta_extra), opt)
    ck = checkpoint.load(path)
    fresh = get_model("small", num_classes=10, in_channels=1, seed=99)
    ck.load_model(fresh, "small")
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert np.array_equal(a, b), name
    assert fresh.get_extra_state() == meta_extra
    opt2 = ck.load_optimizer(Adam(fresh, lr=0.5))
    assert opt2.steps == 2 and opt2.lr == 1e-3
    for slot in ("m", "v"):
        for name, a in opt.state[slot].items():
            assert np.array_equal(a, opt2.state[slot][name]), (slot, name)
    # Everything is plain arrays plus one JSON string: loadable without pickle.
    with np.load(path, allow_pickle=False) as npz:
        assert npz["meta"].dtype.kind == "U"
        assert all(npz[k].dtype != object for k in npz.files)


def test_meta_survives(tmp_path):
    save_small(tmp_path / "c.npz")
    ck = checkpoint.load(tmp_path / "c.npz")
    assert ck["note"] == "hello" and ck["epoch"] == 1
    assert ck["model"] == "small" and ck["num_classes"] == 10 and ck["in_channels"] == 1
    assert ck["input_shape"] == [1, 32, 32]
    assert ck["optimizer"]["name"] == "Adam" and ck["optimizer"]["steps"] == 2


def test_load_accepts_a_run_folder(tmp_path):
    save_small(tmp_path / "last.npz")
    assert checkpoint.load(tmp_path).path.endswith("last.npz")


def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_small(path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(f, **arrays):   # writes part of the new file, then the disk "fills up"
        real_savez(f, **{k: arrays[k] for k in list(arrays)[:3]})
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", savez_then_fail)
    model, opt = trained_small(seed=1)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(path, model, checkpoint.model_meta(model, "small"), opt)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]          # no temporary file left behind
    monkeypatch.undo()
    checkpoint.load(path)                                  # still a good checkpoint


def test_interrupted_rename_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_small(path)
    before = path.read_bytes()

    def no_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", no_replace)
    model, opt = trained_small(seed=1)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, model, checkpoint.model_meta(model, "small"), opt)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.npz"]


@pytest.mark.parametrize("keep", [0, 100, 0.5, 0.99])
def test_truncated_checkpoint_is_a_one_line_error(tmp_path, keep):
    path = tmp_path / "c.npz"
    save_small(path)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "cut short or corrupt" in message


def test_flipped_byte_is_caught_by_the_zip_checksum(tmp_path):
    path = tmp_path / "c.npz"
    save_small(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model/fc6.weight.npy")
    data[info.header_offset + 200] ^= 0xFF       # inside fc6's stored array
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="cut short or corrupt"):
        checkpoint.load(path)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    save_small(tmp_path / "c.npz")
    ck = checkpoint.load(tmp_path / "c.npz")
    other = get_model("alexnet32", num_classes=10, in_channels=1)
    with pytest.raises(CheckpointError) as info:
        ck.load_model(other, "alexnet32")
    assert "'small'" in str(info.value) and "'alexnet32'" in str(info.value)
    more_classes = get_model("small", num_classes=5, in_channels=1)
    with pytest.raises(CheckpointError, match="10 classes"):
        ck.load_model(more_classes, "small")
    rgb = get_model("small", num_classes=10, in_channels=3)
    with pytest.raises(CheckpointError, match="1x32x32"):
        ck.load_model(rgb, "small")


def test_weights_of_another_shape_are_refused_even_under_the_same_name(tmp_path):
    save_small(tmp_path / "c.npz")
    ck = checkpoint.load(tmp_path / "c.npz")
    ck.weights["fc8.weight"] = np.zeros((10, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"fc8.weight has shape \(10, 3\)"):
        ck.load_model(get_model("small", num_classes=10, in_channels=1), "small")


def test_optimizer_of_another_kind_is_refused(tmp_path):
    model, _ = save_small(tmp_path / "c.npz")
    ck = checkpoint.load(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="Adam, not SGD"):
        ck.load_optimizer(SGD(model))


def test_files_that_are_not_checkpoints(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tinyalexnet checkpoint"):
        checkpoint.load(plain)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(text)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": checkpoint.FORMAT}], dtype=object))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(pickled)      # object arrays need pickle: refused, never unpickled


def test_build_model_rebuilds_the_saved_network(tmp_path):
    model, _ = save_small(tmp_path / "c.npz", classes=10)
    rebuilt = checkpoint.build_model(checkpoint.load(tmp_path / "c.npz"))
    assert not rebuilt.training
    x = np.random.default_rng(3).standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert np.array_equal(model.eval().forward(x), rebuilt.forward(x))
