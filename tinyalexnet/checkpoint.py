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

Writes are atomic (``runfolder.write_atomic``): the file is written under a
unique temporary name in the same folder, flushed to disk (``fsync``), then
renamed over the old one (``os.replace``).  A run that dies half way through a
save leaves the previous checkpoint as it was, never a file cut in half.

Reads trust nothing.  Before any array's data is read, every member of the
archive is checked from its ``.npy`` header alone: a known name, a float dtype
(the metadata: one unicode string), and a claimed size equal to the bytes the
member really holds, so an edited header cannot make ``load`` allocate more
than the file's own size.  Then the metadata's fields are checked for type and
range (the optimizer's numbers against ``settings.RANGES``, as when they are
given by hand), the optimizer's state must be complete, and every weight
finite.  Anything else is a one-line CheckpointError naming the file.

Where a run stands besides its arrays (counters, history, best epoch, the
run's identity) is one value, :class:`RunState`: a Trainer saves it in every
checkpoint, and ``RunState.from_checkpoint`` reads it back, checked, for
``resume.py``.
"""
import dataclasses
import json
import math
import os
import re
import stat
import uuid
import zipfile

from . import backend, history
from .backend import numpy as np
from .errors import CheckpointError, NonFiniteError
from .models import MODELS, get_model, model_name
from .runfolder import file_kind, write_atomic
from .settings import is_integer, is_number, is_real, range_of

FORMAT = "tinyalexnet-checkpoint"
VERSION = 1

# The members a checkpoint may hold; anything else is refused unread.
MEMBER = re.compile(r"(meta|model/[A-Za-z0-9_.]+|optim/[A-Za-z0-9_]+/[A-Za-z0-9_.]+)\.npy")
WEIGHT_DTYPES = ("float32", "float64")
MAX_META_BYTES = 64 * 2 ** 20          # the JSON record; a 1,000-epoch history is ~0.2 MB

# The optimizers' numbers a checkpoint may hold; their ranges are settings.RANGES'.
HYPER_NAMES = ("lr", "momentum", "weight_decay", "beta1", "beta2", "eps")


def save(path, model, meta, optimizer=None, finite=False):
    """Write ``model``'s weights, ``optimizer``'s state and ``meta`` (a JSON-able dict) to ``path``.

    ``meta`` should say which model this is (see :func:`model_meta`); the
    optimizer's numbers (learning rate, step count) are added to it here.
    Arrays on the GPU are copied to the host.  Returns ``path``.

    ``finite=True`` (what training uses): a NaN or infinite array raises
    NonFiniteError and nothing is written, since a diverged state must never
    replace a good checkpoint (:func:`load` refuses such files anyway).  The
    check runs on the host copies, so it costs the GPU no extra read.
    """
    arrays = {f"model/{name}": backend.as_numpy(p) for name, p in model.state_dict().items()}
    meta = dict(meta, format=FORMAT, version=VERSION)
    if optimizer is not None:
        sd = optimizer.state_dict()
        arrays.update({f"optim/{key}": backend.as_numpy(a) for key, a in sd["state"].items()})
        meta["optimizer"] = {"name": type(optimizer).__name__, "hyper": sd["hyper"],
                             "steps": sd["steps"]}
    for key, a in arrays.items() if finite else ():
        if not np.isfinite(a).all():
            raise NonFiniteError(f"{key} holds NaN or infinite values; {path} not written")
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(path, arrays)
    return path


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)``, all or nothing (see ``runfolder.write_atomic``)."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


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
        """``"'alexnet_small' (10 classes, input 1x32x32)"``: how messages name the model."""
        return describe_model(self.meta)

    # -------------------------------------------------------------- restoring
    def check_model(self, model, model_name=None):
        """Raise a one-line CheckpointError unless this checkpoint fits ``model``."""
        mine = model_meta(model, model_name or self.meta.get("model"))
        keys = ("model", "num_classes", "in_channels", "input_shape")
        differ = [k for k in keys if mine[k] != self.meta.get(k)]
        if differ:
            raise CheckpointError(f"{self.path}: checkpoint holds {describe_model(self.meta)}, "
                                  f"not {describe_model(mine)} ({', '.join(differ)} differ)")
        # The metadata names this very model, so a mismatch below is in the file itself.
        own = model.state_dict()
        damaged = (f"{self.path}: the weights do not fit {describe_model(self.meta)}, the model "
                   f"its metadata names (edited or damaged file)")
        if set(own) != set(self.weights):
            missing = sorted(set(own) - set(self.weights))
            extra = sorted(set(self.weights) - set(own))
            raise CheckpointError(f"{damaged}: missing {missing[:3] or 'none'}, unexpected "
                                  f"{extra[:3] or 'none'}")
        for name, p in own.items():
            if tuple(self.weights[name].shape) != tuple(p.shape):
                raise CheckpointError(f"{damaged}: {name} has shape "
                                      f"{tuple(self.weights[name].shape)}, expected "
                                      f"{tuple(p.shape)}")

    def load_model(self, model, model_name=None):
        """Copy the weights and dropout counters into ``model`` (after :meth:`check_model`)."""
        self.check_model(model, model_name)
        model.load_state_dict(self.weights)
        extra = self.meta.get("extra_state")
        if extra:
            model.set_extra_state(extra)
        return model

    def load_optimizer(self, optimizer):
        """Restore an optimizer of the same kind: its numbers and its complete state arrays."""
        saved = self.meta.get("optimizer")
        if saved is None:
            raise CheckpointError(f"{self.path}: the checkpoint holds no optimizer state")
        if saved["name"] != type(optimizer).__name__:
            raise CheckpointError(f"{self.path}: optimizer state is for {saved['name']}, "
                                  f"not {type(optimizer).__name__}")
        names = set(optimizer.hyperparameters())
        if set(saved["hyper"]) != names:
            raise CheckpointError(f"{self.path}: {saved['name']}'s numbers are "
                                  f"{sorted(saved['hyper'])}, expected {sorted(names)}")
        # Once a step was taken every parameter has every slot; a missing one
        # would silently restart it from zero and the resumed run would differ.
        expected = {f"{slot}/{name}" for slot in optimizer.slots
                    for name, _, _ in optimizer.model.named_parameters()}
        if saved["steps"] > 0 and set(self.optim_state) != expected:
            missing = sorted(expected - set(self.optim_state))
            extra = sorted(set(self.optim_state) - expected)
            raise CheckpointError(f"{self.path}: the optimizer state is incomplete after "
                                  f"{saved['steps']} steps (missing {missing[:3] or 'none'}, "
                                  f"unexpected {extra[:3] or 'none'})")
        optimizer.load_state_dict({"hyper": saved["hyper"], "steps": saved["steps"],
                                   "state": self.optim_state})
        return optimizer

    def load_scheduler(self, scheduler):
        """Restore a learning-rate schedule's state (None: the run has no schedule)."""
        if scheduler is None:
            return None
        saved, expected = self.meta.get("scheduler"), sorted(scheduler.state_dict())
        if saved is None or sorted(saved) != expected:
            raise CheckpointError(f"{self.path}: the {type(scheduler).__name__} state is "
                                  f"{sorted(saved) if saved else 'missing'}, expected {expected} "
                                  f"(edited or damaged file)")
        scheduler.load_state_dict(saved)
        return scheduler


# --------------------------------------------------------------------- the run's state

@dataclasses.dataclass
class RunState:
    """Where a training run stands, besides what its model, optimizer and schedule hold.

    A new run starts from ``RunState()``; every checkpoint stores it
    (:meth:`meta`), and :meth:`from_checkpoint` reads it back, checked, with
    ``source`` set to that checkpoint: a Trainer given such a state restores
    the weights, dropout counters, optimizer, schedule and input pipeline from
    ``source``, and lets go of it.
    """
    epoch: int = 0                 # epochs completed
    step: int = 0                  # steps completed in the current epoch
    global_step: int = 0           # steps completed in the whole run
    history: list = dataclasses.field(default_factory=list)   # a record per epoch (history.py)
    best_error: float = None       # the lowest validation top-1 error so far
    best_epoch: int = None         # the epoch best.npz holds
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)   # whose files
    changes: list = dataclasses.field(default_factory=list)   # settings changed on resume (--lr)
    branched_from: dict = None     # the checkpoint of another run this one started from
    partial: dict = None           # the running sums of an epoch cut short, to continue
    source: "Checkpoint" = None    # the checkpoint this state was read from (never saved)

    def meta(self):
        """The state as a checkpoint's metadata stores it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "source"}

    @classmethod
    def from_checkpoint(cls, ck):
        """The state saved in the Checkpoint ``ck``, after checking that it hangs together."""
        def damaged(what):
            raise CheckpointError(f"{ck.path}: {what} (edited or damaged file)")
        for key in ("epoch", "step", "global_step"):
            if ck.get(key) is None:
                damaged(f"no {key!r} counter")
        records = ck.get("history") or []
        if len(records) != ck["epoch"]:
            damaged(f"{len(records)} history records for {ck['epoch']} epochs")
        for record in records:
            if not set(history.FIELDS) <= set(record):
                damaged(f"a history record lacks {sorted(set(history.FIELDS) - set(record))}")
        partial = ck.get("partial")
        if partial is not None and not _count(partial.get("count")):
            damaged("the partial epoch's image count is not a count")
        return cls(epoch=ck["epoch"], step=ck["step"], global_step=ck["global_step"],
                   history=list(records), best_error=ck.get("best_error"),
                   best_epoch=ck.get("best_epoch"),
                   run_id=ck.get("run_id") or uuid.uuid4().hex,   # earlier files had none
                   changes=list(ck.get("changes") or []), branched_from=ck.get("branched_from"),
                   partial=partial, source=ck)


def state_name(meta):
    """"after epoch 3" or "at epoch 4, step 17": where a checkpoint's run stood."""
    if not meta.get("step"):
        return f"after epoch {meta.get('epoch')}"
    return f"at epoch {meta.get('epoch', 0) + 1}, step {meta.get('step')}"


def checkpoint_path(path):
    """The checkpoint file ``path`` names (a run folder: its last.npz), if it is a regular file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "last.npz")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):       # a FIFO or a device would block or never end
        raise CheckpointError(f"{path}: {file_kind(mode)}, not a regular file; expected a "
                              ".npz checkpoint")
    return path


def load(path):
    """Read a checkpoint written by :func:`save`; any damage is a one-line CheckpointError."""
    path = checkpoint_path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if head != b"PK\x03\x04":    # every .npz is a zip archive (np.load would try pickle)
            what = ("the file is empty: cut short or corrupt" if not head
                    else "not an .npz archive: another kind of file, or corrupt")
            raise CheckpointError(f"{path}: not a readable checkpoint ({what})")
        f.seek(0)
        with _reading(path):
            with zipfile.ZipFile(f) as z:
                members = _check_members(path, z, os.fstat(f.fileno()).st_size)
                meta = _read_meta(path, z, members.pop("meta", None))
                arrays = {key: _read_array(z, info) for key, (info, _, _) in members.items()}
    weights = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: a for k, a in arrays.items() if k.startswith("optim/")}
    if not weights:
        raise CheckpointError(f"{path}: the checkpoint holds no weights")
    for key, a in arrays.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values (the run had "
                                  f"diverged when it was saved, or the file was edited)")
    return Checkpoint(path, meta, weights, optim)


def read_meta(path):
    """Only the metadata of the checkpoint at ``path`` (cheap: no array is read)."""
    path = checkpoint_path(path)
    with open(path, "rb") as f, _reading(path), zipfile.ZipFile(f) as z:
        members = _check_members(path, z, os.fstat(f.fileno()).st_size)
        return _read_meta(path, z, members.get("meta"))


class _reading:
    """Turn what a damaged archive raises while it is read into one CheckpointError line."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
                            ValueError, KeyError, NotImplementedError)) and \
                not isinstance(err, CheckpointError):
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(f"{self.path}: not a readable checkpoint (cut short or "
                                  f"corrupt: {text})") from None
        return False


def _check_members(path, z, file_size):
    """{key: (zipinfo, shape, dtype)} for every member, from the ``.npy`` headers alone."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    if "meta.npy" not in names:
        raise CheckpointError(f"{path}: not a tinyalexnet checkpoint (no 'meta' record)")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: the archive holds a member twice (edited file)")
    if sum(i.compress_size for i in infos) > file_size:
        raise CheckpointError(f"{path}: not a readable checkpoint (cut short or corrupt: its "
                              f"members claim more bytes than the file has)")
    members = {}
    for info in infos:
        if not MEMBER.fullmatch(info.filename):
            raise CheckpointError(f"{path}: unexpected member {info.filename!r} (a checkpoint "
                                  f"holds only meta, model/... and optim/... arrays)")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: member {info.filename!r} is compressed; "
                                  f"checkpoints are stored uncompressed (np.savez)")
        key = info.filename[:-len(".npy")]
        with z.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise CheckpointError(f"{path}: {key} has .npy format version {version}, "
                                      f"expected 1.0 or 2.0")
            data_bytes = info.file_size - fp.tell()
        if key == "meta":
            ok = dtype.kind == "U" and shape == () and dtype.itemsize <= MAX_META_BYTES
            expected = f"one unicode string of at most {MAX_META_BYTES} bytes"
        else:
            ok = dtype.name in WEIGHT_DTYPES and not dtype.hasobject
            expected = " or ".join(WEIGHT_DTYPES)
        if not ok:
            why = "; object arrays need pickle, which is never loaded" if dtype.hasobject else ""
            raise CheckpointError(f"{path}: not a readable checkpoint ({key} is {dtype} {shape}, "
                                  f"expected {expected}{why})")
        claimed = math.prod(shape) * dtype.itemsize
        if claimed != data_bytes:
            raise CheckpointError(f"{path}: {key} claims shape {shape} ({claimed:,} bytes) but "
                                  f"holds {data_bytes:,} bytes (edited or damaged file)")
        members[key] = (info, shape, dtype)
    for key, (_, shape, _) in members.items():
        if key.startswith("optim/"):
            weight = "model/" + key.split("/", 2)[2]
            if weight not in members or members[weight][1] != shape:
                raise CheckpointError(f"{path}: optimizer state {key} {shape} has no weight "
                                      f"of that shape (edited or damaged file)")
    return members


def _read_array(z, info):
    with z.open(info) as fp:
        a = np.lib.format.read_array(fp, allow_pickle=False)
        fp.read()                # to the end, so the zip's CRC-32 is checked
    return a


def _read_meta(path, z, member):
    if member is None:
        raise CheckpointError(f"{path}: not a tinyalexnet checkpoint (no 'meta' record)")
    try:
        meta = json.loads(str(_read_array(z, member[0])))
    except ValueError as err:
        raise CheckpointError(f"{path}: the checkpoint's metadata is damaged ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinyalexnet checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version", 0)
    if not is_integer(version):
        raise CheckpointError(f"{path}: the checkpoint's format version {version!r} is not a "
                              f"number")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta['version']} is newer "
                              f"than this tinyalexnet understands ({VERSION}); upgrade tinyalexnet")
    check_meta(path, meta)
    meta["model"] = model_name(meta["model"])    # an earlier version's name ("small") too
    return meta


# --------------------------------------------------------------------- the metadata

def _real(v):
    """A number, infinities allowed (a plateau schedule starts from best = inf), NaN not."""
    return is_real(v) and not math.isnan(v)


def _count(v):
    return is_integer(v) and v >= 0


def _optional(check):
    return lambda v: v is None or check(v)


def _list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _dict_of(check):
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x)
                                                 for k, x in v.items())


_fraction = lambda v: is_number(v) and 0 <= v <= 1                       # noqa: E731
_history_value = is_real
MAX_SIDE = 2 ** 16


def _shape_ok(v):
    return isinstance(v, list) and len(v) == 3 and all(is_integer(d) and 1 <= d <= MAX_SIDE
                                                       for d in v)


def _pipeline_ok(p):
    """The input pipeline's record: shapes, per-channel mean and std, PCA lighting."""
    if not (isinstance(p, dict) and _shape_ok(p.get("source_shape"))
            and _shape_ok(p.get("input_shape"))):
        return False
    channels = p["source_shape"][0]
    for key in ("mean", "std"):
        if not (_list_of(is_number)(p.get(key)) and len(p[key]) == channels):
            return False
    if not all(s > 0 for s in p["std"]):
        return False
    if not all(isinstance(p.get(k, False), bool) for k in ("augment", "flip", "lighting")):
        return False
    canvas = p.get("canvas")
    if canvas is not None and not (isinstance(canvas, list) and len(canvas) == 2
                                   and all(is_integer(d) for d in canvas)):
        return False
    pca = p.get("pca")
    if pca is not None:
        vectors = pca.get("eigvec") if isinstance(pca, dict) else None
        if not (_list_of(is_number)(pca.get("eigval") if isinstance(pca, dict) else None)
                and len(pca["eigval"]) == 3 and isinstance(vectors, list) and len(vectors) == 3
                and all(_list_of(is_number)(row) and len(row) == 3 for row in vectors)):
            return False
    return True


def _config_ok(c):
    """The run's settings: plain values (the trainer checks each one's range on resume)."""
    scalar = lambda v: v is None or isinstance(v, (bool, int, float, str))   # noqa: E731
    return (_dict_of(scalar)(c) and isinstance(c.get("dataset", ""), str)
            and isinstance(c.get("data_dir") or "", str))


# field: (check, what it must be).  Fields missing from the file are None.
META_FIELDS = {
    "model": (lambda v: isinstance(v, str), "a model name"),
    "num_classes": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "in_channels": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "input_shape": (lambda v: isinstance(v, list) and len(v) == 3
                    and all(is_integer(d) and d >= 1 for d in v), "[channels, height, width]"),
    "classes": (_optional(_list_of(lambda c: isinstance(c, str))), "a list of class names"),
    "epoch": (_optional(_count), "a count"),
    "step": (_optional(_count), "a count"),
    "global_step": (_optional(_count), "a count"),
    "steps_per_epoch": (_optional(_count), "a count"),
    "best_epoch": (_optional(_count), "a count"),
    "best_error": (_optional(_fraction), "a number in [0, 1]"),
    "config": (_optional(_config_ok), "a dict of settings"),
    "pipeline": (_optional(_pipeline_ok), "an input pipeline's shapes, mean and std"),
    "scheduler": (_optional(_dict_of(_real)), "a dict of numbers"),
    "extra_state": (_optional(_dict_of(_dict_of(_count))), "a dict of per-layer counters"),
    "history": (_optional(_list_of(_dict_of(_history_value))), "a list of per-epoch records"),
    "partial": (_optional(_dict_of(is_number)), "a dict of numbers"),
    "optimizer": (_optional(lambda v: isinstance(v, dict) and set(v) == {"name", "hyper", "steps"}
                            and isinstance(v["name"], str) and _count(v["steps"])
                            and _dict_of(is_real)(v["hyper"])),     # ranges: check_meta
                  "{name, hyper: {numbers}, steps}"),
    "run_id": (_optional(lambda v: isinstance(v, str)), "a string"),
    "changes": (_optional(_list_of(lambda v: isinstance(v, dict))), "a list of records"),
    "branched_from": (_optional(lambda v: isinstance(v, dict)), "a dict"),
}


def check_meta(path, meta):
    """Raise a one-line CheckpointError for a metadata field of the wrong type or range."""
    for field, (ok, expected) in META_FIELDS.items():
        value = meta.get(field)
        if field in ("model", "num_classes", "in_channels", "input_shape") or value is not None:
            if not ok(value):
                raise CheckpointError(f"{path}: the checkpoint's {field!r} is "
                                      f"{_short(value)}, expected {expected} (edited or "
                                      f"damaged file)")
    if meta["input_shape"][0] != meta["in_channels"]:
        raise CheckpointError(f"{path}: the checkpoint's input_shape {meta['input_shape']} "
                              f"disagrees with its in_channels {meta['in_channels']}")
    if meta.get("classes") is not None and len(meta["classes"]) != meta["num_classes"]:
        raise CheckpointError(f"{path}: the checkpoint names {len(meta['classes'])} classes "
                              f"but its model has {meta['num_classes']}")
    for name, value in ((meta.get("optimizer") or {}).get("hyper") or {}).items():
        if name not in HYPER_NAMES:
            raise CheckpointError(f"{path}: unknown optimizer number {name!r}")
        allowed = range_of(name)
        if not allowed.allows(value):
            raise CheckpointError(f"{path}: the optimizer's {name} is {value!r}, expected "
                                  f"{allowed.rule} (edited or damaged file)")


def _short(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def check_classes(ck, classes, source):
    """Refuse data whose class names differ from the ones ``ck``'s model learned (in order).

    ``source`` names the data in the message (a data set name or folder).
    Checkpoints that stored no names are only checked by count elsewhere.
    """
    mine, theirs = ck.get("classes"), list(classes)
    if mine is None or list(mine) == theirs:
        return
    raise CheckpointError(f"{source} has classes {_names(theirs)} but {ck.path} was trained on "
                          f"{_names(mine)}: a model's outputs mean the classes it was trained "
                          f"on, in that order")


def _names(classes, most=12):
    shown = ", ".join(repr(c) for c in classes[:most])
    more = f", ... ({len(classes)} in all)" if len(classes) > most else ""
    return f"[{shown}{more}]"


def model_meta(model, name):
    """What identifies a model in a checkpoint: its name, classes, channels and input shape."""
    input_shape = list(getattr(model, "input_shape", ()))
    fc = [p for n, p in model.state_dict().items() if n.endswith("weight")]
    return {"model": model_name(name), "num_classes": int(fc[-1].shape[0]) if fc else None,
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
