"""ImageNet's validation layout: one flat folder of images and a file of labels.

The training images of ILSVRC2012 come in class folders (``train/n01440764/
n01440764_10026.JPEG``), which ``folder.list_images`` reads.  The 50,000
validation images come as one flat folder, ``ILSVRC2012_val_00000001.JPEG``
to ``ILSVRC2012_val_00050000.JPEG``, with their labels in a separate file.  Two
label files are in use, and both are read here:

1. The devkit's ``ILSVRC2012_validation_ground_truth.txt``: line k is the class
   of image k, as an ILSVRC2012_ID from 1 to 1000.  Those IDs are *not* the
   sorted order of the class folders: ID 1 is n02119789 (kit fox), while the
   first folder is n01440764 (tench).  So the file needs the devkit's mapping
   from IDs to WordNet IDs (``--synsets``), one of:

   - the devkit's ``data/meta.mat`` (read with SciPy, if installed), or
   - a text file with one line per ID in ID order, ``n02119789`` or
     ``n02119789 kit fox``, or with the ID written out: ``1 n02119789`` or
     ``n02119789 1 kit_fox``.

   A list of the 1,000 WordNet IDs in sorted order (``LOC_synset_mapping.txt``,
   Caffe's ``synset_words.txt``) is the classes' order, not the devkit's, and
   would give every image a wrong label: it is refused.

2. ``LOC_val_solution.csv`` (the Kaggle release): a header
   ``ImageId,PredictionString``, then ``ILSVRC2012_val_00008726,n02119789 255
   142 454 329 ...``; the first word of the prediction string is the class.

The class of an image is matched by its WordNet ID to the training split's
class folders, so labels agree between the splits.  Every image in the folder
must have a label; a label file may list more images than the folder holds
(a subset of the validation set).
"""
import csv
import re
from pathlib import Path

from ..errors import DataError

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})$")
WNID = re.compile(r"n\d{8}$")
FIRST_SORTED_WNID = "n01440764"        # tench: first of the 1,000 classes in sorted order


def read_val_labels(paths, labels_file, classes, synsets_file=None):
    """The label (index into ``classes``) of each of ``paths`` (the flat folder's images).

    ``labels_file``: the devkit's ground truth (then ``synsets_file`` is needed)
    or ``LOC_val_solution.csv``.  A one-line DataError names what is missing.
    """
    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: no such label file; give the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt or LOC_val_solution.csv")
    text = labels_file.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().lower().startswith("imageid"):
        wnid_of = _solution_csv(labels_file, text)
        key = lambda path: path.stem                                    # noqa: E731
    else:
        if synsets_file is None:
            raise DataError(f"{labels_file}: devkit ground truth (ILSVRC2012_IDs 1-1000) needs "
                            "the devkit's ID-to-WordNet mapping: give --synsets with the "
                            "devkit's data/meta.mat or a text file of the WordNet IDs in ID order")
        synsets = read_synsets(synsets_file)
        wnid_of = {}
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                wnid_of[line_no] = synsets[int(line)]
            except (ValueError, KeyError):
                raise DataError(f"{labels_file}, line {line_no}: {line.strip()[:40]!r} is not "
                                f"an ILSVRC2012_ID of {synsets_file} (1 to {len(synsets)})") \
                    from None

        def key(path):
            match = VAL_NAME.match(path.stem)
            return int(match.group(1)) if match else None
    index = {c: k for k, c in enumerate(classes)}
    labels = []
    for path in paths:
        wnid = wnid_of.get(key(path))
        if wnid is None:
            raise DataError(f"{path}: no label for this image in {labels_file} (expected "
                            "ILSVRC2012_val_NNNNNNNN.JPEG names, each listed there)")
        if wnid not in index:
            raise DataError(f"{path}: its class {wnid} (from {labels_file}) is not one of the "
                            f"{len(classes)} training classes ({', '.join(classes[:3])}...)")
        labels.append(index[wnid])
    return labels


def _solution_csv(path, text):
    wnid_of = {}
    rows = csv.reader(text.splitlines())
    header = next(rows)
    if [h.strip().lower() for h in header[:2]] != ["imageid", "predictionstring"]:
        raise DataError(f"{path}: expected the header ImageId,PredictionString, got "
                        f"{','.join(header)[:60]!r}")
    for line_no, row in enumerate(rows, 2):
        if not row:
            continue
        words = row[1].split() if len(row) >= 2 else []
        if not words:
            raise DataError(f"{path}, line {line_no}: expected ImageId,PredictionString with a "
                            f"class first, got {','.join(row)[:60]!r}")
        wnid_of[row[0].strip()] = words[0]
    return wnid_of


def read_synsets(path):
    """{ILSVRC2012_ID: WordNet ID} from the devkit's meta.mat or a text file (see above)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such synsets file; give the devkit's data/meta.mat or a "
                        "text file of the WordNet IDs in ILSVRC2012_ID order")
    if path.suffix.lower() == ".mat":
        return _synsets_mat(path)
    synsets, explicit = {}, False
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                   .splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) >= 2 and words[0].isdigit():
            ident, name, explicit = int(words[0]), words[1], True
        elif len(words) >= 2 and words[1].isdigit():
            ident, name, explicit = int(words[1]), words[0], True
        else:
            ident, name = len(synsets) + 1, words[0]
        synsets[ident] = name
    names = [synsets[k] for k in sorted(synsets)]
    if (not explicit and len(names) == 1000 and names[0] == FIRST_SORTED_WNID
            and names == sorted(names) and all(WNID.match(n) for n in names)):
        raise DataError(f"{path}: lists the 1,000 WordNet IDs in sorted order (like "
                        "LOC_synset_mapping.txt), not in the devkit's ILSVRC2012_ID order (ID 1 "
                        "is n02119789, kit fox): every label would be wrong; give the devkit's "
                        "data/meta.mat, or use LOC_val_solution.csv as the label file")
    return synsets


def _synsets_mat(path):
    try:
        from scipy.io import loadmat         # optional: MATLAB files need SciPy
    except ImportError:
        raise DataError(f"{path}: reading the devkit's meta.mat needs SciPy (pip install "
                        "scipy); or give a text file of the WordNet IDs in ILSVRC2012_ID order") \
            from None
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                if 1 <= int(s["ILSVRC2012_ID"]) <= 1000}
    except (KeyError, ValueError, TypeError, IndexError, OSError) as err:
        raise DataError(f"{path}: not the devkit's meta.mat (a 'synsets' table with "
                        f"ILSVRC2012_ID and WNID): {err}") from None
