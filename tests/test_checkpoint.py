"""Checkpoints: exact round trip, atomic writes, one-line errors for damaged or foreign files."""
import io
import json
import os
import re
import shutil
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
    model = get_model("alexnet_small", num_classes=classes, in_channels=1, seed=seed)
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
    meta = dict(checkpoint.model_meta(model, "alexnet_small"), epoch=1, note="hello")
    checkpoint.save(path, model, meta, opt)
    return model, opt


def test_round_trip_restores_weights_optimizer_and_dropout_counters(tmp_path):
    path = tmp_path / "c.npz"
    model, opt = save_small(path)
    meta_extra = model.get_extra_state()
    assert meta_extra["drop6"]["calls"] == 2   # two training forwards drew two masks
    checkpoint.save(path, model, dict(checkpoint.model_meta(model, "alexnet_small"),
                                      extra_state=meta_extra), opt)
    ck = checkpoint.load(path)
    fresh = get_model("alexnet_small", num_classes=10, in_channels=1, seed=99)
    ck.load_model(fresh, "alexnet_small")
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
    assert ck["model"] == "alexnet_small" and ck["num_classes"] == 10 and ck["in_channels"] == 1
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
        checkpoint.save(path, model, checkpoint.model_meta(model, "alexnet_small"), opt)
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
        checkpoint.save(path, model, checkpoint.model_meta(model, "alexnet_small"), opt)
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
    assert "'alexnet_small'" in str(info.value) and "'alexnet32'" in str(info.value)
    more_classes = get_model("alexnet_small", num_classes=5, in_channels=1)
    with pytest.raises(CheckpointError, match="10 classes"):
        ck.load_model(more_classes, "alexnet_small")
    rgb = get_model("alexnet_small", num_classes=10, in_channels=3)
    with pytest.raises(CheckpointError, match="1x32x32"):
        ck.load_model(rgb, "alexnet_small")


def test_weights_of_another_shape_are_refused_even_under_the_same_name(tmp_path):
    save_small(tmp_path / "c.npz")
    ck = checkpoint.load(tmp_path / "c.npz")
    ck.weights["fc8.weight"] = np.zeros((10, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"fc8.weight has shape \(10, 3\)"):
        ck.load_model(get_model("alexnet_small", num_classes=10, in_channels=1), "alexnet_small")


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


# ----------------------------------------------------------------------------- edited files
# Every array is checked from its .npy header before its data is read, and the
# metadata for type and range: an edited or damaged checkpoint is one line.

def raw_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def rewrite(path, edit_meta=None, arrays=None):
    """Save ``path`` again with ``arrays`` replaced (None: removed) and ``edit_meta(meta)``."""
    data = raw_arrays(path)
    for key, a in (arrays or {}).items():
        if a is None:
            del data[key]
        else:
            data[key] = a
    if edit_meta is not None:
        meta = json.loads(str(data["meta"]))
        edit_meta(meta)
        data["meta"] = np.array(json.dumps(meta))
    np.savez(path, **data)


def npy_member(shape, dtype, payload):
    """The bytes of a .npy file whose header claims ``shape``/``dtype``, followed by ``payload``."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": shape})
    return f.getvalue() + payload


def add_members(path, members, drop=()):
    """Copy the archive at ``path`` with ``members`` ({name: bytes}) added or replacing."""
    with zipfile.ZipFile(path) as z:
        old = {i.filename: z.read(i) for i in z.infolist() if i.filename not in members
               and i.filename not in drop}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in {**old, **members}.items():
            z.writestr(name, data)


def set_hyper(name, value):
    def edit(meta):
        meta["optimizer"]["hyper"][name] = value
    return edit


@pytest.mark.parametrize("name, value, expected", [
    ("lr", -0.001, "lr"), ("lr", float("nan"), "lr"), ("lr", float("inf"), "lr"),
    ("lr", "0.1", "numbers"), ("eps", 0.0, "eps"), ("beta2", 1.5, "beta2"),
    ("momentum", 0.9, "momentum")])   # Adam has no momentum
def test_edited_optimizer_numbers_are_refused(tmp_path, name, value, expected):
    path = tmp_path / "c.npz"
    model, _ = save_small(path)
    rewrite(path, set_hyper(name, value))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path).load_optimizer(Adam(model, lr=0.5))
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_missing_optimizer_arrays_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    model, _ = save_small(path)
    rewrite(path, arrays={"optim/m/fc8.weight": None})
    ck = checkpoint.load(path)
    with pytest.raises(CheckpointError, match=r"incomplete after 2 steps \(missing \['m/fc8"):
        ck.load_optimizer(Adam(model))


@pytest.mark.parametrize("dtype", ["complex64", "bool", "int32", "float16", "object"])
def test_weights_that_are_not_float32_or_float64_are_refused(tmp_path, dtype):
    path = tmp_path / "c.npz"
    save_small(path)
    fc8 = raw_arrays(path)["model/fc8.weight"]
    rewrite(path, arrays={"model/fc8.weight": fc8.astype(dtype)})
    with pytest.raises(CheckpointError, match=f"model/fc8.weight is {dtype}"):
        checkpoint.load(path)


def test_an_unknown_member_is_refused_unread(tmp_path):
    path = tmp_path / "c.npz"
    save_small(path)
    # Its header claims 80 GB: reading it at all would fail with MemoryError.
    add_members(path, {"extra.npy": npy_member((10 ** 10,), "float64", b"\0" * 16)})
    with pytest.raises(CheckpointError, match="unexpected member 'extra.npy'"):
        checkpoint.load(path)


@pytest.mark.parametrize("shape", [(10 ** 10,), (10, 256, 2), (10, 255)])
def test_a_header_claiming_another_size_is_refused_before_reading(tmp_path, shape):
    path = tmp_path / "c.npz"
    save_small(path)
    data = raw_arrays(path)["model/fc8.weight"].tobytes()          # 10 x 256 float32
    assert len(data) == 10 * 256 * 4
    add_members(path, {"model/fc8.weight.npy": npy_member(shape, "float32", data)})
    with pytest.raises(CheckpointError, match=r"model/fc8.weight claims shape .* but holds "
                                              r"10,240 bytes"):
        checkpoint.load(path)


def test_a_compressed_or_duplicated_member_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_small(path)
    data = raw_arrays(path)
    np.savez_compressed(path, **data)
    with pytest.raises(CheckpointError, match="compressed"):
        checkpoint.load(path)


@pytest.mark.parametrize("where", ["model/fc8.weight", "optim/v/conv1.weight"])
def test_nan_or_infinite_arrays_are_refused(tmp_path, where):
    path = tmp_path / "c.npz"
    save_small(path)
    a = raw_arrays(path)[where].copy()
    a.flat[3] = np.nan if where.startswith("model") else np.inf
    rewrite(path, arrays={where: a})
    with pytest.raises(CheckpointError, match=f"{where} holds NaN or infinite values"):
        checkpoint.load(path)


def test_a_wrong_model_message_names_two_different_models(tmp_path):
    """Whatever is wrong, a message never says "holds X, not X" with the same X."""
    path = tmp_path / "c.npz"
    save_small(path)
    messages = []
    ck = checkpoint.load(path)
    for model, name in ((get_model("alexnet_small", num_classes=5, in_channels=1), "alexnet_small"),
                        (get_model("alexnet32", num_classes=10, in_channels=1), "alexnet32")):
        with pytest.raises(CheckpointError) as info:
            ck.load_model(model, name)
        messages.append(str(info.value))
    # meta that disagrees with itself: in_channels 3 beside input_shape [1, 32, 32]
    rewrite(path, lambda meta: meta.update(in_channels=3))
    with pytest.raises(CheckpointError) as info:
        checkpoint.build_model(checkpoint.load(path))
    messages.append(str(info.value))
    assert "in_channels" in messages[-1]
    # weights that do not fit the model the metadata names
    save_small(path)
    ck = checkpoint.load(path)
    ck.weights["fc8.weight"] = np.zeros((10, 3), np.float32)
    with pytest.raises(CheckpointError) as info:
        ck.load_model(get_model("alexnet_small", num_classes=10, in_channels=1), "alexnet_small")
    messages.append(str(info.value))
    assert "edited or damaged" in messages[-1] and "expected (10, 256)" in messages[-1]
    for message in messages:
        described = re.findall(r"model '\w+' \([^)]*\)", message)
        assert len(described) == len(set(described)), message


# ----------------------------------------------------------------------------- through the CLI

QUICK = ["--limit", "100", "--batch-size", "50", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tinyalexnet.cli import main
    out = tmp_path_factory.mktemp("edited") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *QUICK]) == 0
    return out


def setter(*keys, value):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


# Edits that once raised TypeError, ValueError, AttributeError, IndexError or
# KeyError somewhere in train --resume, evaluate or predict.
EDITS = {
    "epoch is text": setter("epoch", value="x"),
    "negative step": setter("step", value=-1),
    "history missing an epoch": setter("history", value=[]),
    "history value None": lambda m: m["history"][0].update(val_top1_error=None),
    "lr as text in the settings": setter("config", "lr", value="abc"),
    "negative seed in the settings": setter("config", "seed", value=-1),
    "data set name a list": setter("config", "dataset", value=[]),
    "data folder a number": setter("config", "data_dir", value=5),
    "unknown setting": setter("config", "colour", value="red"),
    "dropout counter text": setter("extra_state", "drop6", "calls", value="x"),
    "dropout state a number": setter("extra_state", "drop6", value=5),
    "pca a string": setter("pipeline", "pca", value="x"),
    "source shape empty": setter("pipeline", "source_shape", value=[]),
    "mean empty": setter("pipeline", "mean", value=[]),
    "std zero": setter("pipeline", "std", value=[0.0]),
    "canvas a number": setter("pipeline", "canvas", value=5),
    "num_classes text": setter("num_classes", value="10"),
    "input shape short": setter("input_shape", value=[1, 32]),
    "in_channels disagree": setter("in_channels", value=3),
    "one class name": setter("classes", value=["a"]),
    "partial count text": setter("partial", value={"count": "x"}),
    "best error above 1": setter("best_error", value=2),
    "optimizer a number": setter("optimizer", value=5),
    "steps negative": setter("optimizer", "steps", value=-3),
    "negative lr": setter("optimizer", "hyper", "lr", value=-0.001),
    "format version text": setter("version", value="1"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_metadata_is_one_line_everywhere(run_dir, tmp_path, capsys, edit):
    from PIL import Image

    from tinyalexnet.cli import main
    path = tmp_path / "last.npz"
    shutil.copyfile(run_dir / "last.npz", path)
    rewrite(path, EDITS[edit])
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    before = path.read_bytes()
    for command in (["train", "--resume", str(path), "--epochs", "2", "--no-progress"],
                    ["evaluate", str(path), "--limit", "20", "--no-progress"],
                    ["predict", str(path), str(image)]):
        code = main(command)
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if command[0] == "train" or code != 0:
            assert code == 2, (command, err)
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), (command, err)
    assert path.read_bytes() == before
