"""The command line: help, info, a tiny train/evaluate/predict round, Ctrl-C, and every user
mistake answered by one line on stderr and exit code 2."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinyalexnet import backend
from tinyalexnet.cli import main
from tinyalexnet.datasets import load_dataset

from cli_refusals import user_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--limit", "200", "--batch-size", "50", "--no-progress"]


def run(args, capsys):
    """main(args) -> (exit code, stdout, stderr)."""
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def python_m(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tinyalexnet", *args], cwd=ROOT,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch run of the default model on 200 embedded images."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *QUICK]) == 0
    return out


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """Three test images of the embedded set written as PNG files, and their labels."""
    folder = tmp_path_factory.mktemp("pngs")
    test = load_dataset("fashion-mnist-subset", "test")
    images, labels = test.get_batch(np.arange(3))
    paths = []
    for k, img in enumerate(images):
        paths.append(str(folder / f"image{k}.png"))
        Image.fromarray(img[0]).save(paths[-1])
    return paths, [test.classes[y] for y in labels]


# ----------------------------------------------------------------------------- help and info

@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["info"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main(command + ["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tinyalexnet") and "--help" in out


def test_help_from_a_real_process():
    result = python_m("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "info"):
        assert command in result.stdout


def test_info_prints_the_summary_table(capsys):
    code, out, _ = run(["info", "alexnet"], capsys)
    assert code == 0
    assert "Total parameters: 60,965,224" in out and "conv1" in out and "96x55x55" in out
    code, out, _ = run(["info", "alexnet_small", "--in-channels", "1"], capsys)
    assert code == 0 and "input                       1x32x32" in out


# ----------------------------------------------------------------------------- a tiny round

def test_train_prints_accuracy_and_where_things_went(run_dir, capsys):
    for name in ("last.npz", "best.npz", "history.csv", "history.json", "history.png",
                 "confusion_matrix.png", "test.json"):
        assert (run_dir / name).is_file(), name
    result = json.loads((run_dir / "test.json").read_text())
    assert result["count"] == 200 and 0 <= result["accuracy"] <= 1
    assert len(result["confusion"]) == 10


def test_train_output(tmp_path, capsys):
    code, out, err = run(["train", "--epochs", "1", "--out", str(tmp_path / "r"), "--limit",
                          "100", "--batch-size", "45", "--no-progress"], capsys)
    assert code == 0, err
    assert "epoch 1/1" in out and "test accuracy" in out
    assert str(tmp_path / "r" / "last.npz") in out and "history.png" in out


def test_resume_extends_a_finished_run(run_dir, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, out, err = run(["train", "--resume", str(copy), "--epochs", "2", "--no-progress"],
                         capsys)
    assert code == 0, err
    assert "resuming" in out and "epoch 2/2" in out
    assert len(json.loads((copy / "history.json").read_text())) == 2


def test_evaluate(run_dir, capsys):
    code, out, err = run(["evaluate", str(run_dir / "last.npz"), "--limit", "120",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "top-1 error" in out and "top-5 error" in out and "120 images" in out
    assert (run_dir / "last-fashion-mnist-subset-test-confusion.png").is_file()
    code, out, err = run(["evaluate", str(run_dir), "--limit", "60", "--ten-crop",
                          "--plot", str(run_dir / "ten.png"), "--no-progress"], capsys)
    assert code == 0, err
    assert "ten crops" in out and (run_dir / "ten.png").is_file()


def test_predict_on_png_files(run_dir, pngs, capsys):
    paths, _ = pngs
    code, out, err = run(["predict", str(run_dir / "best.npz"), *paths], capsys)
    assert code == 0, err
    blocks = out.strip().split("\n")
    assert len(blocks) == 3 * 6                      # a name and five ranked classes each
    for k, path in enumerate(paths):
        assert blocks[6 * k] == path
        ranked = blocks[6 * k + 1:6 * k + 6]
        probs = [float(line.rsplit(None, 1)[1].rstrip("%")) for line in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.01
        assert ranked[0].lstrip().startswith("1. ")


def model_answers(ck_path, images):
    """The checkpoint's top class for each image, counted here: the network rebuilt from
    its file, every layer run in turn, Dropout skipped, the arg-max of the last."""
    from tinyalexnet import checkpoint
    from tinyalexnet.layers import Dropout
    from tinyalexnet.transforms import Pipeline
    ck = checkpoint.load(ck_path)
    model = checkpoint.build_model(ck)
    x = Pipeline.from_config(ck["pipeline"])(images, train=False)
    for layer in model:
        if not isinstance(layer, Dropout):
            x = layer.forward(x)
    return x.argmax(axis=1), ck["classes"]


def test_evaluate_reports_the_error_under_its_name(run_dir, capsys):
    from tinyalexnet.datasets.split import limit_dataset
    test = limit_dataset(load_dataset("fashion-mnist-subset", "test"), 200, seed=0)  # --limit
    images, labels = test.get_batch(np.arange(len(test)))
    answers, _ = model_answers(run_dir / "last.npz", images)
    accuracy = 100 * np.mean(answers == labels)
    assert abs(accuracy - 50) > 1                   # else the two words could not be told apart
    code, out, err = run(["evaluate", str(run_dir), "--limit", "200", "--no-progress", "--plot",
                          str(run_dir / "200.png")], capsys)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("top-1 error "))
    error = float(line.split("top-1 error ", 1)[1].split("%", 1)[0])
    shown_accuracy = float(line.split("(accuracy ", 1)[1].split("%", 1)[0])
    assert error == pytest.approx(100 - accuracy, abs=0.006)
    assert shown_accuracy == pytest.approx(accuracy, abs=0.006)


def test_predict_names_the_classes_it_found(run_dir, pngs, capsys):
    paths, _ = pngs
    code, out, err = run(["predict", str(run_dir / "last.npz"), *paths, "--top", "3"], capsys)
    assert code == 0, err
    images = np.stack([np.asarray(Image.open(p))[None] for p in paths])
    answers, classes = model_answers(run_dir / "last.npz", images)
    lines = out.strip().splitlines()
    for k in range(len(paths)):
        ranked = [l.split(None, 1)[1].rsplit(None, 1)[0].strip() for l in lines[4 * k + 1:4 * k + 4]]
        assert all(name in classes for name in ranked), ranked
        assert ranked[0] == classes[answers[k]]


def test_ctrl_c_saves_exits_130_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinyalexnet", "train", "--limit", "400",
                             "--epochs", "50", "--batch-size", "40", "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:                 # wait until the first epoch is done
        if line.startswith("epoch 1/50"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err and "saved" in err
    assert (out / "last.npz").is_file()
    result = python_m("train", "--resume", str(out), "--epochs", "2", "--no-progress",
                      timeout=300)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout


# ----------------------------------------------------------------------------- user mistakes

def test_bad_option_values(capsys):
    user_error(["train", "--lr", "-1"], capsys, "--lr", "> 0")
    user_error(["train", "--batch-size", "0"], capsys, "--batch-size")
    user_error(["train", "--epochs", "many"], capsys, "--epochs", "invalid int")
    user_error(["train", "--model", "vgg"], capsys, "vgg", "alexnet_small")
    user_error(["train", "--backend", "tpu"], capsys, "tpu")
    user_error(["train", "--val-fraction", "1.5"], capsys, "--val-fraction")
    user_error(["train", "--limit", "1"], capsys, "--limit")
    user_error(["train", "--no-such-option"], capsys, "--no-such-option")
    user_error(["evaluate"], capsys, "checkpoint")
    user_error(["info", "alexnet_small", "--num-classes", "0"], capsys, "--num-classes")
    user_error(["frobnicate"], capsys, "frobnicate")


def test_missing_data_set_says_how_to_get_it(tmp_path, capsys):
    _, line = user_error(["train", "--dataset", "fashion-mnist", "--data-dir",
                          str(tmp_path / "nowhere"), *QUICK], capsys, "add --download",
                         "give --data-dir")
    assert "download=True" not in line and "data_dir" not in line    # the Python API's words
    user_error(["train", "--dataset", "imagenet-22k", *QUICK], capsys, "imagenet-22k")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present")
def test_gpu_backend_without_a_gpu(capsys):
    user_error(["train", "--backend", "cupy", *QUICK], capsys, "cupy", "unavailable")


def test_run_folder_mistakes(run_dir, tmp_path, capsys):
    before = (run_dir / "last.npz").read_bytes()
    user_error(["train", "--out", str(run_dir), *QUICK], capsys, "already holds a run",
               "--resume")
    user_error(["train", "--resume", str(run_dir), "--batch-size", "10"], capsys,
               "--batch-size", "cannot change")
    user_error(["train", "--resume", str(run_dir), "--model", "alexnet32"], capsys, "--model")
    user_error(["train", "--resume", str(tmp_path / "nothing")], capsys, "no such checkpoint")
    user_error(["train", "--resume"], capsys, "--resume")
    assert (run_dir / "last.npz").read_bytes() == before


def test_checkpoint_mistakes(run_dir, pngs, tmp_path, capsys):
    paths, _ = pngs
    cut = tmp_path / "cut.npz"
    cut.write_bytes((run_dir / "last.npz").read_bytes()[:5000])
    for command in (["evaluate", str(cut)], ["predict", str(cut), paths[0]],
                    ["train", "--resume", str(cut)]):
        user_error(command, capsys, str(cut), "cut short")
    user_error(["evaluate", str(tmp_path / "missing.npz")], capsys, "no such checkpoint")
    user_error(["evaluate", paths[0]], capsys, paths[0], "not a readable checkpoint")
    user_error(["evaluate", str(run_dir / "last.npz"), "--dataset", "cifar10", "--data-dir",
                str(tmp_path)], capsys, "cifar")


def test_predict_mistakes(run_dir, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    user_error(["predict", str(run_dir / "last.npz"), str(text)], capsys, str(text))
    user_error(["predict", str(run_dir / "last.npz"), str(tmp_path / "gone.png")], capsys,
               "gone.png", "no such image")
    user_error(["predict", str(run_dir / "last.npz")], capsys, "IMAGE")


def test_user_errors_from_a_real_process_have_no_traceback(tmp_path):
    result = python_m("evaluate", str(tmp_path / "missing.npz"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.npz'}: no such checkpoint file"]
