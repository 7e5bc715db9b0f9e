"""The history of a run: one record per finished epoch, as history.json and history.csv.

A record holds the epoch's training loss and accuracy (the running numbers),
the validation loss and top-1/top-5 error, the learning rate it trained with,
its time and speed.  The files are rewritten whole after every epoch with the
run folder's atomic writer, so a crash leaves the old file or the new one.
"""
import json
import os

from .runfolder import write_text_atomic

FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_top1_error",
          "val_top5_error", "lr", "time", "images_per_s")


def history_files(history):
    """``{file name: text}`` of the two history files for the records ``history``."""
    def value(v):
        return repr(v) if isinstance(v, float) else str(v)    # repr: every digit of a float
    lines = [",".join(FIELDS)] + [",".join(value(h[k]) for k in FIELDS) for h in history]
    return {"history.json": json.dumps(history, indent=1), "history.csv": "\n".join(lines) + "\n"}


def write_history(folder, history, only_if_changed=False):
    """Write history.json and history.csv into ``folder`` (``only_if_changed``: leave a file
    that already holds the same text untouched)."""
    for name, text in history_files(history).items():
        path = os.path.join(folder, name)
        if only_if_changed and _read_text(path) == text:
            continue
        write_text_atomic(path, text)


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, ValueError):
        return None
