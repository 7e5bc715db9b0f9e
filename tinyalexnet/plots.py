"""Pictures of a run: learning curves, the confusion matrix, conv1's kernels.

Each function builds a matplotlib ``Figure`` directly (no ``pyplot``), so it
works the same in a script, on a server without a screen and in a notebook
(where the returned figure shows itself when it is a cell's last value), and
never changes the global plotting backend.  Pass ``path`` to also write a PNG
(or another format, by the file name's extension: ``FORMATS``).
"""
import math
import os

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import backend
from .backend import numpy as np
from .errors import ConfigError
from .runfolder import write_atomic
from .streams import printable

#: The picture formats a path may end in (matplotlib writes each without extra software).
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


def check_figure_path(path, option="--plot"):
    """Refuse, in one line and before any work is done, a picture path that cannot be
    written: an unknown extension, a folder that does not exist or cannot be written,
    or a path that is itself a folder."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        got = f"'.{ext}'" if ext else "no extension"
        raise ConfigError(f"{option} {path}: unknown picture format ({got}); expected a file "
                          f"name ending in {', '.join('.' + f for f in FORMATS)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "no such folder"
        raise ConfigError(f"{option} {path}: {folder}: {what}; create it first or choose "
                          "another path")
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a folder; expected a file name such as "
                          f"{os.path.join(path, 'confusion.png')}")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option} {path}: the folder {folder} is not writable")


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` all or nothing (``runfolder.write_atomic``: a temporary
    file with a name of its own in the same folder, then a rename), so a full disk or
    Ctrl-C never leaves half a picture in place of the old one.  The format is the
    extension's (none: PNG, appended)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if not ext:
        ext, path = "png", path + ".png"
    return write_atomic(path, lambda f: fig.savefig(f, dpi=dpi, format=ext))


def plot_history(history, path=None):
    """Loss and accuracy (train and validation) and the learning rate, per epoch.

    ``history`` is the list of per-epoch dicts a Trainer records (keys
    ``epoch, train_loss, train_acc, val_loss, val_top1_error, lr``).
    """
    fig = Figure(figsize=(12, 3.6))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [1.0 - h["val_top1_error"] for h in history], "s-", label="validation")
    ax_acc.set(title="top-1 accuracy", xlabel="epoch")
    ax_lr.plot(epochs, [h["lr"] for h in history], "o-", color="tab:green")
    ax_lr.set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend()
    ax_acc.legend()
    return _finish(fig, path)


def plot_confusion_matrix(matrix, classes, path=None, normalize=True):
    """Rows: the true class; columns: the predicted class.  ``normalize`` shows each row
    as fractions of that class's images (the diagonal is then the per-class accuracy)."""
    m = np.asarray(backend.as_numpy(matrix), dtype=np.float64)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = max(4.5, 0.5 * k + 2)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
           title="confusion matrix" + (" (fraction of each true class)" if normalize else ""))
    # a class folder whose name is not UTF-8 has characters no font can draw: \xNN instead
    names = [printable(str(c)) for c in classes]
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 * m.max() else "black")
    return _finish(fig, path)


def kernel_grid(weight, columns=None, pad=1):
    """The kernels of a conv layer tiled into one image, as in the paper's Figure 3.

    ``weight`` is (F, C, kh, kw).  Each kernel is scaled to [0, 1] on its own
    (its pattern matters, not its size); C = 3 shows colour, other C shows the
    mean over input channels in grey.  Returns an (H, W, 3) float array.
    """
    w = np.asarray(backend.as_numpy(weight), dtype=np.float64)
    F, C, kh, kw = w.shape
    w = w if C == 3 else w.mean(axis=1, keepdims=True).repeat(3, axis=1)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    high = w.max(axis=(1, 2, 3), keepdims=True)
    w = (w - low) / np.maximum(high - low, 1e-12)
    columns = columns or int(math.ceil(math.sqrt(F)))
    rows = int(math.ceil(F / columns))
    grid = np.ones((rows * (kh + pad) + pad, columns * (kw + pad) + pad, 3))
    for f in range(F):
        r, c = divmod(f, columns)
        top, left = pad + r * (kh + pad), pad + c * (kw + pad)
        grid[top:top + kh, left:left + kw] = w[f].transpose(1, 2, 0)
    return grid


def plot_kernels(weight, path=None, title="conv1 kernels", columns=None):
    """Show :func:`kernel_grid` of a (F, C, kh, kw) weight such as
    ``model["conv1"].params["weight"]``."""
    grid = kernel_grid(weight, columns)
    scale = 8.0 / max(grid.shape[:2])
    fig = Figure(figsize=(max(2.0, grid.shape[1] * scale), max(2.0, grid.shape[0] * scale) + 0.4))
    ax = fig.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_title(f"{title}: {weight.shape[0]} of {weight.shape[2]}x{weight.shape[3]}"
                 f"x{weight.shape[1]}")
    ax.axis("off")
    return _finish(fig, path)
