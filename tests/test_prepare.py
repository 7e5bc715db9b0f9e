"""prepare: a store holds what ImageFolder gives, survives being killed, refuses bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from image_sources import SORTED, class_folders, photo, png_claiming, save
from tinyalexnet.cli import main
from tinyalexnet.datasets import load_dataset
from tinyalexnet.datasets import store as st
from tinyalexnet.datasets.prepare import prepare
from tinyalexnet.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SIZE = 24
ARRAYS = (st.IMAGES, st.LABELS, st.CRC32, st.SOURCES, st.MANIFEST)


def quiet(*_):
    pass


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    class_folders(root / "train", per_class=5)
    class_folders(root / "test", per_class=2, rng=np.random.default_rng(7))
    return root


def make(source, out, **options):
    options.setdefault("workers", 0)
    options.setdefault("chunk_images", 4)
    return prepare(source, out, size=SIZE, log=quiet, **options)


def one_line(err):
    message = str(err.value)
    assert message and "\n" not in message
    return message


def same_store(a, b):
    for split in ("train", "test"):
        for name in ARRAYS:
            assert (a / split / name).read_bytes() == (b / split / name).read_bytes(), \
                f"{split}/{name} differs"


# ----------------------------------------------------------------------------- contents

@pytest.mark.parametrize("decoder", ["pillow", "simplejpeg"])
def test_store_holds_what_image_folder_gives(source, tmp_path, decoder):
    if decoder == "simplejpeg":
        pytest.importorskip("simplejpeg")
    make(source, tmp_path / "store", decoder=decoder)
    for split in ("train", "test"):
        stored = load_dataset("store", split, data_dir=tmp_path / "store", size=SIZE)
        folder = load_dataset("folder", split, data_dir=source, size=SIZE)
        assert stored.classes == folder.classes == SORTED and len(stored) == len(folder)
        order = np.random.default_rng(0).permutation(len(folder))
        images, labels = stored.get_batch(order)
        expected, expected_labels = folder.get_batch(order)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(images, expected)          # the same bytes
    m = json.loads((tmp_path / "store" / "train" / st.MANIFEST).read_text())
    assert m["count"] == 15 and m["size"] == SIZE and m["decoder"] == decoder
    assert len(m["chunks"]) == 4 and m["chunk_images"] == 4             # 15 images, 4 a chunk
    sources = json.loads((tmp_path / "store" / "train" / st.SOURCES).read_text())
    assert sources["files"][0] == f"train/{SORTED[0]}/{SORTED[0]}_0.JPEG"
    assert sources["bytes"][0] == (source / sources["files"][0]).stat().st_size


def test_raw_files_are_plain_npy_and_the_manifest_checksums_hold(source, tmp_path):
    make(source, tmp_path / "store")
    folder = tmp_path / "store" / "train"
    m = json.loads((folder / st.MANIFEST).read_text())
    images = np.load(folder / st.IMAGES, mmap_mode="r", allow_pickle=False)
    assert images.shape == (15, 3, SIZE, SIZE) and images.dtype == np.uint8
    import hashlib
    k = m["chunk_images"]
    for c, digest in enumerate(m["chunks"]):                 # an independent recount
        assert hashlib.sha256(np.ascontiguousarray(images[c * k:(c + 1) * k])).hexdigest() \
            == digest
    for key, name in (("labels", st.LABELS), ("crc32", st.CRC32), ("sources", st.SOURCES)):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == m[key]["sha256"]
    import zlib
    crc = np.load(folder / st.CRC32)
    assert [zlib.crc32(np.ascontiguousarray(im)) for im in images] == crc.tolist()
    assert not (folder / st.PLAN).exists() and not (folder / st.JOURNAL).exists()


def test_workers_do_not_change_the_store(source, tmp_path):
    make(source, tmp_path / "one", workers=0)
    make(source, tmp_path / "two", workers=2)
    same_store(tmp_path / "one", tmp_path / "two")


def test_prepare_again_checks_a_finished_store(source, tmp_path):
    out = tmp_path / "store"
    make(source, out)
    lines = []
    prepare(source, out, size=SIZE, workers=0, chunk_images=4, log=lines.append)
    assert any("is complete" in line for line in lines)
    with pytest.raises(DataError) as err:                     # other settings: refused
        prepare(source, out, size=SIZE + 8, workers=0, log=quiet)
    assert "size differ" in one_line(err)
    save(str(source / "train" / SORTED[0] / "new.png"), photo(np.random.default_rng(3), 30, 30))
    with pytest.raises(DataError, match="source folder's files changed"):
        make(source, out)


# ----------------------------------------------------------------------------- resuming

CRASH = """
import os, sys
sys.path.insert(0, {repo!r})
import tinyalexnet.datasets.prepare as p
module = {{"prepare": p, "store": p.store, "os": p.os}}[{where!r}]
original, calls = getattr(module, {name!r}), [0]
def crash(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {n}:
        os._exit(137)                 # as kill -9 would: nothing more is written or flushed
    return original(*args, **kwargs)
setattr(module, {name!r}, crash)
from tinyalexnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_prepare(source, out, crash=None, workers=2):
    argv = ["prepare", "--data-dir", str(source), "--out", str(out), "--size", str(SIZE),
            "--workers", str(workers), "--chunk-images", "4"]
    where, name, n = crash or ("store", "journal_line", 0)
    code = CRASH.format(repo=str(REPO), where=where, name=name, n=n)
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, start_new_session=True)


@pytest.mark.parametrize("crash, workers, again", [
    # where the first run dies, its workers, what the second run must decode again
    (("prepare", "write_text_atomic", 1), 0, "train: this run decoded 15"),  # before the plan
    (("store", "journal_line", 2), 2, "train: this run decoded 11"),  # 1 chunk of 4 recorded
    (("store", "journal_line", 5), 0, "test: this run decoded 6"),  # train done, test's 1st chunk
    (("prepare", "write_atomic", 2), 0, "train: this run decoded 0"),  # labels.npy written only
    (("os", "replace", 5), 0, "train: this run decoded 0"),  # images.partial.npy not renamed
    (("store", "manifest_record", 1), 2, "train: this run decoded 0"),  # renamed, no manifest
    (("store", "manifest_record", 2), 0, "test: this run decoded 0"),  # train complete, test not
])
def test_killed_at_any_point_then_resumed_gives_the_same_store(source, tmp_path, crash,
                                                               workers, again):
    reference = tmp_path / "reference"
    make(source, reference)
    out = tmp_path / "store"
    first = run_prepare(source, out, crash, workers)
    assert first.returncode == 137, first.stderr
    with pytest.raises(DataError):                      # nothing half-made is usable
        load_dataset("store", "test", data_dir=out, size=SIZE)
    second = run_prepare(source, out, workers=2 - workers)
    assert second.returncode == 0, second.stderr
    same_store(reference, out)
    assert "store ready" in second.stdout
    decoded = [line.split(":")[0].split("/")[-1] + ": this run decoded " +
               line.split("this run decoded ")[1].split()[0]
               for line in second.stdout.splitlines() if "this run decoded" in line]
    assert decoded[0] == again, second.stdout


def test_a_journal_line_cut_short_is_ignored(source, tmp_path):
    make(source, tmp_path / "reference")
    out = tmp_path / "store"
    run_prepare(source, out, ("store", "journal_line", 3))
    journal = out / "train" / st.JOURNAL
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""                  # two complete lines
    journal.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[1][:30])   # a torn third
    recorded = sorted(json.loads(line.split(b" ", 1)[1])["chunk"] for line in lines[:2])
    other = next(c for c in range(4) if c not in recorded)
    garbage = lines[0].replace(b'"chunk":%d' % recorded[0], b'"chunk":%d' % other)  # bad CRC
    with open(journal, "ab") as f:
        f.write(b"\n" + garbage + b"\n")
    assert sorted(st.read_journal(out / "train")) == recorded
    assert run_prepare(source, out, workers=0).returncode == 0
    same_store(tmp_path / "reference", out)


def _session_processes(sid):
    """Processes (pid, state) whose session is ``sid``: what a command left behind."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                found.append((int(entry), fields[0]))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_mid_run_takes_the_workers_along_and_resumes(source, tmp_path):
    big = tmp_path / "big"
    class_folders(big / "train", per_class=40, sizes=((300, 400),))
    prepare(big, tmp_path / "reference", size=64, workers=0, chunk_images=2, log=quiet)
    out = tmp_path / "store"
    argv = [sys.executable, "-m", "tinyalexnet", "prepare", "--data-dir", str(big), "--out",
            str(out), "--size", "64", "--workers", "2", "--chunk-images", "2"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    journal = out / "train" / st.JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read()
    proc.kill()                                                   # kill -9 of prepare alone
    proc.wait()
    proc.stderr.close()
    deadline = time.monotonic() + 10
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_processes(proc.pid) == []                    # the workers died with it
    done = len(st.read_journal(out / "train"))
    assert 3 <= done < 60
    with pytest.raises(DataError) as err:
        load_dataset("store", "train", data_dir=out, size=64)
    assert f"prepare stopped after {done} of 60 chunks" in one_line(err)
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{done} chunks were done before" in again.stdout
    for name in ARRAYS:
        assert (out / "train" / name).read_bytes() == \
            (tmp_path / "reference" / "train" / name).read_bytes()


# ----------------------------------------------------------------------------- bad files

@pytest.fixture
def bad_source(tmp_path):
    root = tmp_path / "bad"
    class_folders(root / "train", per_class=3)
    first = root / "train" / SORTED[0]
    (first / "truncated.JPEG").write_bytes((first / f"{SORTED[0]}_0.JPEG").read_bytes()[:400])
    (first / "words.jpg").write_bytes(b"this is not a picture")
    (root / "train" / SORTED[1] / "huge.png").write_bytes(png_claiming(100_000, 100_000))
    os.mkfifo(root / "train" / SORTED[2] / "pipe.png")
    cmyk = np.random.default_rng(5).integers(0, 255, (30, 40, 4)).astype(np.uint8)
    from PIL import Image
    Image.fromarray(cmyk, "CMYK").save(root / "train" / SORTED[2] / "cmyk.jpg")
    deep = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(deep).save(root / "train" / SORTED[2] / "deep16.png")
    return root


def test_a_bad_file_stops_prepare_naming_it(bad_source, tmp_path):
    os.remove(bad_source / "train" / SORTED[2] / "pipe.png")
    with pytest.raises(DataError) as err:
        make(bad_source, tmp_path / "store")
    assert "truncated.JPEG" in one_line(err) and "cannot decode" in str(err.value)


def test_a_fifo_stops_prepare_before_anything_is_decoded(bad_source, tmp_path):
    with pytest.raises(DataError) as err:
        make(bad_source, tmp_path / "store")
    assert "pipe.png: is a FIFO" in one_line(err)
    assert not (tmp_path / "store").exists()


def test_skip_bad_lists_each_file_and_keeps_the_rest(bad_source, tmp_path):
    make(bad_source, tmp_path / "store", skip_bad=True)
    folder = tmp_path / "store" / "train"
    m = json.loads((folder / st.MANIFEST).read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"truncated.JPEG", "words.jpg", "huge.png", "pipe.png"}
    assert "cannot decode" in reasons["truncated.JPEG"] and "FIFO" in reasons["pipe.png"]
    assert "too large" in reasons["huge.png"] and "cannot decode" in reasons["words.jpg"]
    report = (folder / st.REPORT).read_text()
    assert "skipped 4 file(s)" in report and all(name in report for name in reasons)
    # rows of files skipped while decoding stay zero with label -1; readers leave them out
    labels = np.load(folder / st.LABELS)
    assert (labels == -1).sum() == 3 and m["count"] == 11
    stored = load_dataset("store", "train", data_dir=tmp_path / "store", size=SIZE)
    assert len(stored) == 11
    # the CMYK and 16-bit images are kept, converted exactly as ImageFolder converts them
    sources = json.loads((folder / st.SOURCES).read_text())["files"]
    kept = [name for name, label in zip(sources, labels) if label >= 0]
    from tinyalexnet.datasets import load_image_file
    images, _ = stored.get_batch(np.arange(len(stored)))
    for k, name in enumerate(kept):
        np.testing.assert_array_equal(images[k], load_image_file(bad_source / name, 3, SIZE))
    assert any(name.endswith("cmyk.jpg") for name in kept)
    assert any(name.endswith("deep16.png") for name in kept)


def test_files_skipped_before_are_not_silently_kept_without_skip_bad(bad_source, tmp_path,
                                                                     monkeypatch):
    os.remove(bad_source / "train" / SORTED[2] / "pipe.png")
    out = tmp_path / "store"

    def crash(*args):
        raise RuntimeError("stopped just before the manifest")
    with monkeypatch.context() as m:
        m.setattr(st, "manifest_record", crash)
        with pytest.raises(RuntimeError):
            make(bad_source, out, skip_bad=True)
    with pytest.raises(DataError) as err:
        make(bad_source, out)                                # resumed without --skip-bad
    assert "left out by an earlier prepare with --skip-bad" in one_line(err)
    make(bad_source, out, skip_bad=True)
    assert json.loads((out / "train" / st.MANIFEST).read_text())["count"] == 11


# ----------------------------------------------------------------------------- the commands

def test_prepare_train_evaluate_from_the_command_line(source, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["prepare", "--data-dir", str(source), "--out", str(out), "--size", "36",
                 "--workers", "0"]) == 0
    assert "store ready" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--dataset", "store", "--data-dir", str(out), "--model",
                 "alexnet_small", "--epochs", "1", "--batch-size", "4", "--augment",
                 "--lighting", "--out", str(run), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--ten-crop", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "on store (test, 6 images, ten crops)" in text
    assert main(["train", "--dataset", "store", "--data-dir", str(out), "--model", "alexnet",
                 "--epochs", "1", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "holds 36x36 images, this model reads 256x256" in err and "--size 256" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_prepare_cleanly(tmp_path, signum, code):
    big = tmp_path / "big"
    class_folders(big / "train", per_class=30, sizes=((300, 400),))
    argv = [sys.executable, "-m", "tinyalexnet", "prepare", "--data-dir", str(big), "--out",
            str(tmp_path / "store"), "--size", "64", "--workers", "2", "--chunk-images", "2"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    journal = tmp_path / "store" / "train" / st.JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.is_file() and journal.read_bytes()):
        time.sleep(0.01)
    assert proc.poll() is None and journal.read_bytes(), "no chunk done within 60 s"
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)          # the terminal's Ctrl-C reaches the workers too
    else:
        proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=120)    # a deadlock in the pool fails here
        assert proc.returncode == code, err
        assert "prepare stopped; run the same command again" in err and "Traceback" not in err
        deadline = time.monotonic() + 10
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _session_processes(proc.pid) == []
    finally:
        for pid, _ in _session_processes(proc.pid):      # nothing left behind, pass or fail
            os.kill(pid, signal.SIGKILL)


def test_an_unfinished_store_of_other_settings_is_not_mixed(source, tmp_path, monkeypatch):
    out = tmp_path / "store"
    with monkeypatch.context() as m:
        m.setattr(st, "manifest_record", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
        with pytest.raises(RuntimeError):
            make(source, out)
    with pytest.raises(DataError) as err:
        prepare(source, out, size=SIZE + 8, workers=0, chunk_images=4, log=quiet)
    message = one_line(err)
    assert "an unfinished prepare of other images or settings" in message
    assert f"size {SIZE} then, {SIZE + 8} now" in message
    with pytest.raises(DataError, match="inside the source folder"):
        make(source, source / "train" / "store")
