"""Checkpoints: a whole training run in one ``.npz`` file, with no pickle.

A checkpoint holds everything needed to continue a run exactly where it
stopped, or to use the trained network later::

    model/conv1.weight ...          the weights (``model.state_dict()``)
    optim/velocity/conv1.weight ... the optimizer's per-parameter state
    meta                            one JSON string: model name and shapes,
                                    epoch and step, optimizer and scheduler
                                    numbers, dropout counters, history,
                                    the run's config and the input pipeline

Arrays are stored as arrays; everything else is JSON in a 0-d unicode array,
so the file is read with ``np.load(..., allow_pickle=False)``: opening a
checkpoint can never run code hidden in it.

Writes are atomic: the file is written as ``name.tmp`` in the same folder,
flushed to disk (``fsync``), then renamed over the old one (``os.replace``).
A run that dies half way through a save leaves the previous checkpoint as it
was, never a file cut in half.
"""
import json
import os
import zipfile

from . import backend
from .backend import numpy as np
from .errors import CheckpointError
from .models import MODELS, get_model

FORMAT = "tinyalexnet-checkpoint"
VERSION = 1


def save(path, model, meta, optimizer=None):
    """Write ``model``'s weights, ``optimizer``'s state and ``meta`` (a JSON-able dict) to ``path``.

    ``meta`` should say which model this is (see :func:`model_meta`); the
    optimizer's numbers (learning rate, step count) are added to it here.
    Arrays on the GPU are copied to the host.  Returns ``path``.
    """
    arrays = {f"model/{name}": backend.as_numpy(p) for name, p in model.state_dict().items()}
    meta = dict(meta, format=FORMAT, version=VERSION)
    if optimizer is not None:
        sd = optimizer.state_dict()
        arrays.update({f"optim/{key}": backend.as_numpy(a) for key, a in sd["state"].items()})
        meta["optimizer"] = {"name": type(optimizer).__name__, "hyper": sd["hyper"],
                             "steps": sd["steps"]}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)
    return path


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)``, all or nothing: temporary file, fsync, rename."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)   # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(folder):
    """Make the rename itself durable (POSIX); harmless where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpoint:
    """A loaded checkpoint: ``meta`` (dict), ``weights`` and ``optim_state`` ({name: array})."""

    def __init__(self, path, meta, weights, optim_state):
        self.path, self.meta = path, meta
        self.weights, self.optim_state = weights, optim_state

    def __getitem__(self, key):
        return self.meta[key]

    def get(self, key, default=None):
        return self.meta.get(key, default)

    def describe(self):
        """``"'small' (10 classes, input 1x32x32)"``: how messages name the model inside."""
        return describe_model(self.meta)

    # -------------------------------------------------------------- restoring
    def check_model(self, model, model_name=None):
        """Raise a one-line CheckpointError unless this checkpoint fits ``model``."""
        mine = model_meta(model, model_name or self.meta.get("model"))
        keys = ("model", "num_classes", "in_channels", "input_shape")
        if any(mine[k] != self.meta.get(k) for k in keys):
            raise CheckpointError(f"{self.path}: checkpoint holds {describe_model(self.meta)}, "
                                  f"not {describe_model(mine)}")
        own = model.state_dict()
        if set(own) != set(self.weights):
            missing = sorted(set(own) - set(self.weights))
            extra = sorted(set(self.weights) - set(own))
            raise CheckpointError(f"{self.path}: weights do not match the model (missing "
                                  f"{missing[:3] or 'none'}, unexpected {extra[:3] or 'none'})")
        for name, p in own.items():
            if tuple(self.weights[name].shape) != tuple(p.shape):
                raise CheckpointError(f"{self.path}: {name} has shape "
                                      f"{tuple(self.weights[name].shape)} in the checkpoint but "
                                      f"{tuple(p.shape)} in the model; it belongs to "
                                      f"{describe_model(self.meta)}")

    def load_model(self, model, model_name=None):
        """Copy the weights and dropout counters into ``model`` (after :meth:`check_model`)."""
        self.check_model(model, model_name)
        model.load_state_dict(self.weights)
        extra = self.meta.get("extra_state")
        if extra:
            model.set_extra_state(extra)
        return model

    def load_optimizer(self, optimizer):
        """Restore an optimizer of the same kind: its numbers and its state arrays."""
        saved = self.meta.get("optimizer")
        if saved is None:
            raise CheckpointError(f"{self.path}: the checkpoint holds no optimizer state")
        if saved["name"] != type(optimizer).__name__:
            raise CheckpointError(f"{self.path}: optimizer state is for {saved['name']}, "
                                  f"not {type(optimizer).__name__}")
        optimizer.load_state_dict({"hyper": saved["hyper"], "steps": saved["steps"],
                                   "state": self.optim_state})
        return optimizer


def load(path):
    """Read a checkpoint written by :func:`save`; any damage is a one-line CheckpointError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "last.npz")
    if not os.path.isfile(path):     # only regular files: reading a FIFO would wait forever
        raise CheckpointError(f"{path}: no such checkpoint file" if not os.path.exists(path) else
                              f"{path}: not a regular file (a FIFO, device or socket); expected "
                              "a .npz checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":    # every .npz is a zip archive (np.load would try pickle)
        what = ("the file is empty: cut short or corrupt" if not head
                else "not an .npz archive: another kind of file, or corrupt")
        raise CheckpointError(f"{path}: not a readable checkpoint ({what})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (cut short or corrupt: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__})"
                              ) from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise CheckpointError(f"{path}: not a tinyalexnet checkpoint (no 'meta' record)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as err:
        raise CheckpointError(f"{path}: the checkpoint's metadata is damaged ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinyalexnet checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta['version']} is newer "
                              f"than this tinyalexnet understands ({VERSION}); upgrade tinyalexnet")
    weights = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: a for k, a in arrays.items() if k.startswith("optim/")}
    if not weights:
        raise CheckpointError(f"{path}: the checkpoint holds no weights")
    return Checkpoint(path, meta, weights, optim)


def model_meta(model, name):
    """What identifies a model in a checkpoint: its name, classes, channels and input shape."""
    input_shape = list(getattr(model, "input_shape", ()))
    fc = [p for n, p in model.state_dict().items() if n.endswith("weight")]
    return {"model": name, "num_classes": int(fc[-1].shape[0]) if fc else None,
            "in_channels": int(input_shape[0]) if input_shape else None,
            "input_shape": input_shape}


def describe_model(meta):
    shape = "x".join(str(d) for d in meta.get("input_shape") or ()) or "?"
    return f"model {meta.get('model')!r} ({meta.get('num_classes')} classes, input {shape})"


def build_model(ck, backend_name="numpy"):
    """The network a checkpoint holds, rebuilt from its metadata, weights loaded, in eval mode."""
    if ck.get("model") not in MODELS:
        raise CheckpointError(f"{ck.path}: unknown model {ck.get('model')!r} in the checkpoint")
    model = get_model(ck["model"], num_classes=ck["num_classes"], in_channels=ck["in_channels"])
    ck.load_model(model, ck["model"])
    return model.to(backend_name).eval()
