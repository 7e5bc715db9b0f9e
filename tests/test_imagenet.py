"""ImageNet's validation layout: a flat folder and the devkit's or Kaggle's label file."""
import numpy as np
import pytest

from image_sources import CLASSES, SORTED, class_folders, flat_val
from tinyalexnet.datasets import imagenet, load_dataset
from tinyalexnet.datasets.prepare import prepare
from tinyalexnet.errors import DataError

SIZE = 24


def make(source, out, **options):
    return prepare(source, out, size=SIZE, workers=0, chunk_images=4, log=lambda *a: None,
                   **options)


def one_line(err):
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_synsets_text_forms(tmp_path):
    for text in ("n02119789\nn01440764 tench\n", "1 n02119789\n2 n01440764 x\n",
                 "n02119789 1 kit_fox\nn01440764 2 tench\n"):
        (tmp_path / "s.txt").write_text(text)
        assert imagenet.read_synsets(tmp_path / "s.txt") == {1: "n02119789", 2: "n01440764"}


def test_devkit_ground_truth_with_a_synsets_file(tmp_path):
    root = tmp_path / "imagenet"
    class_folders(root / "train", per_class=2)
    truth = [CLASSES[k % 3] for k in range(7)]
    flat_val(root / "val", truth)
    ids = {wnid: k for k, wnid in enumerate(CLASSES, 1)}           # the devkit's order
    (tmp_path / "gt.txt").write_text("".join(f"{ids[w]}\n" for w in truth) + "1\n2\n")
    (tmp_path / "synsets.txt").write_text("".join(f"{w} some words\n" for w in CLASSES))
    make(root, tmp_path / "store", val_labels=tmp_path / "gt.txt",
         synsets=tmp_path / "synsets.txt")
    val = load_dataset("store", "test", data_dir=tmp_path / "store", size=SIZE)
    assert val.name == "store/val" and val.classes == SORTED
    assert [val.classes[k] for k in val.labels] == truth
    folder = load_dataset("store", "train", data_dir=tmp_path / "store", size=SIZE)
    assert folder.classes == SORTED


def test_loc_val_solution_csv(tmp_path):
    root = tmp_path / "imagenet"
    class_folders(root / "train", per_class=2)
    truth = [CLASSES[(k * 2) % 3] for k in range(5)]
    flat_val(root / "val", truth)
    rows = [f"ILSVRC2012_val_{k:08d},{w} 10 20 30 40 {w} 1 2 3 4" for k, w in enumerate(truth, 1)]
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n"
                                                   + "\n".join(rows[::-1]) + "\n")
    make(root, tmp_path / "store", val_labels=tmp_path / "LOC_val_solution.csv")
    val = load_dataset("store", "test", data_dir=tmp_path / "store", size=SIZE)
    assert [val.classes[k] for k in val.labels] == truth


def test_validation_layout_mistakes(tmp_path):
    root = tmp_path / "imagenet"
    class_folders(root / "train", per_class=2)
    flat_val(root / "val", CLASSES)
    with pytest.raises(DataError, match="flat folder of images .* needs its labels"):
        make(root, tmp_path / "s1")
    (tmp_path / "gt.txt").write_text("1\n2\n")                        # 3 images, 2 labels
    with pytest.raises(DataError, match="needs the devkit's ID-to-WordNet mapping"):
        make(root, tmp_path / "s2", val_labels=tmp_path / "gt.txt")
    (tmp_path / "syn.txt").write_text("\n".join(CLASSES) + "\n")
    with pytest.raises(DataError) as err:
        make(root, tmp_path / "s3", val_labels=tmp_path / "gt.txt", synsets=tmp_path / "syn.txt")
    assert "ILSVRC2012_val_00000003.JPEG: no label" in one_line(err)
    wnids = ["n01440764"] + [f"n{1440765 + k:08d}" for k in range(999)]
    (tmp_path / "sorted.txt").write_text("".join(f"{w} name\n" for w in wnids))
    (tmp_path / "gt.txt").write_text("1\n2\n3\n")
    with pytest.raises(DataError, match="sorted order .* every label would be wrong"):
        make(root, tmp_path / "s4", val_labels=tmp_path / "gt.txt",
             synsets=tmp_path / "sorted.txt")
    (tmp_path / "other.txt").write_text("1\n2\n5\n")
    with pytest.raises(DataError, match="line 3: '5' is not an ILSVRC2012_ID"):
        make(root, tmp_path / "s5", val_labels=tmp_path / "other.txt",
             synsets=tmp_path / "syn.txt")


def test_devkit_meta_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "imagenet"
    class_folders(root / "train", per_class=2)
    truth = [CLASSES[(k + 1) % 3] for k in range(4)]
    flat_val(root / "val", truth)
    # the devkit's table: leaves first (ILSVRC2012_ID 1..), then a non-leaf synset
    records = np.array([(k, w, "words") for k, w in enumerate(CLASSES, 1)]
                       + [(1001, "n00001740", "entity")],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    scipy_io.savemat(tmp_path / "meta.mat", {"synsets": records})
    ids = {wnid: k for k, wnid in enumerate(CLASSES, 1)}
    (tmp_path / "gt.txt").write_text("".join(f"{ids[w]}\n" for w in truth))
    make(root, tmp_path / "store", val_labels=tmp_path / "gt.txt", synsets=tmp_path / "meta.mat")
    val = load_dataset("store", "test", data_dir=tmp_path / "store", size=SIZE)
    assert [val.classes[k] for k in val.labels] == truth
