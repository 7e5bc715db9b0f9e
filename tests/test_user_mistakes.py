"""What users really do to the command line, and what they must get back.

Image files of every bit depth (16-bit PNG/TIFF/PGM, 48-bit PNG, float TIFF),
FIFOs where files should be, symbolic link loops, tiny files that claim huge
images, thousands of images at once, folders that cannot be written, file names
that are not UTF-8, absurd option values.  Each mistake must end in one line
``error: ...`` and exit status 2 (no traceback, no hang); each file that can be
read must be read correctly.

Commands that could hang forever without the fix (a FIFO read as a file) run in
a real ``python -m tinyalexnet`` child process with a timeout, so a regression
fails the test instead of stopping the suite.

Tests may run as root, where ``chmod`` does not stop a write.  Where a folder
must be unwritable, root gets a path whose writing fails for another real
reason (a folder squatting the file's name, a "folder" that is a regular file);
``chmod`` itself is used too when the tests do not run as root.
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from tinyalexnet import checkpoint, cli
from tinyalexnet.cli import main
from tinyalexnet.datasets import ImageFolder, load_dataset, load_image_file
from tinyalexnet.datasets import folder as folder_module
from tinyalexnet.errors import DataError
from tinyalexnet.runfolder import RunFolder

from cli_refusals import one_line_error, user_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--limit", "100", "--batch-size", "50", "--no-progress"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def python_m(*args, timeout=120, **kwargs):
    """A real ``python -m tinyalexnet ARGS`` child process (bytes arguments allowed)."""
    return subprocess.run([sys.executable, "-m", "tinyalexnet", *args], cwd=ROOT,
                          capture_output=True, timeout=timeout, **kwargs)


def refused(result, *expected):
    """A finished child process refused its command in one line, exit status 2."""
    return one_line_error(result.returncode, result.stderr.decode(errors="replace"), *expected)


def png_bytes(array, bit_depth, colour_type):
    """A PNG file written by hand (big-endian samples, no filter), for depths Pillow does not
    write itself: colour_type 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    a = np.asarray(array, dtype=">u2" if bit_depth == 16 else np.uint8)
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[r].tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def gradient16(h=32, w=64):
    """Every 16-bit grey level from 0 to 65535, in order: a gradient."""
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


def to8(v16):
    """The independent reference: 16-bit v is the 8-bit level v / 257 (65535 = 255 * 257)."""
    return np.rint(np.asarray(v16, np.float64) / 257).astype(np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch run of the default model (no augmentation) on 100 embedded images."""
    out = tmp_path_factory.mktemp("mistakes") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *QUICK]) == 0
    return out


@pytest.fixture(scope="module")
def test_images():
    """Four grey 28x28 test images of the embedded set."""
    images, _ = load_dataset("fashion-mnist-subset", "test").get_batch(np.arange(4))
    return images[:, 0]


def predictions(out):
    """predict's output as [(file, [(class, percent), ...]), ...]."""
    blocks, lines = [], out.strip().splitlines()
    for line in lines:
        if not line.startswith("  "):
            blocks.append((line, []))
        else:
            name, percent = line.split(None, 1)[1].rsplit(None, 1)     # "  1. Ankle boot  9.1%"
            blocks[-1][1].append((name.strip(), float(percent.rstrip("%"))))
    return blocks


# ----------------------------------------------------------------------------- bit depths

@pytest.mark.parametrize("name, mode", [("g.png", "I;16"), ("g.tif", "I;16"),
                                        ("big-endian.tif", "I;16B"), ("g.pgm", "I")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, name, mode):
    v = gradient16()
    path = tmp_path / name
    if mode == "I;16B":
        Image.frombytes(mode, (v.shape[1], v.shape[0]), v.astype(">u2").tobytes()).save(path)
    elif name.endswith(".pgm"):
        path.write_bytes(b"P5\n%d %d\n65535\n" % (v.shape[1], v.shape[0])
                         + v.astype(">u2").tobytes())
    else:
        Image.fromarray(v).save(path)
    with Image.open(path) as img:                        # the case under test really arises
        assert img.mode == mode
    grey = load_image_file(path, channels=1)
    np.testing.assert_array_equal(grey[0], to8(v))
    assert (grey == 255).mean() < 0.01                   # clipping made 99.6% of it white
    rgb = load_image_file(path, channels=3)
    np.testing.assert_array_equal(rgb, np.broadcast_to(to8(v), rgb.shape))


def test_16_bit_rgb_and_grey_alpha_pngs(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (12, 20, 3))
    (tmp_path / "exact.png").write_bytes(png_bytes(levels * 257, 16, 2))    # 48-bit RGB
    np.testing.assert_array_equal(load_image_file(tmp_path / "exact.png", 3),
                                  levels.transpose(2, 0, 1))
    v = rng.integers(0, 65536, (12, 20, 3))                                   # any 16-bit value
    (tmp_path / "any.png").write_bytes(png_bytes(v, 16, 2))
    got = load_image_file(tmp_path / "any.png", 3).astype(int)
    assert np.abs(got - to8(v).transpose(2, 0, 1)).max() <= 1
    alpha = np.stack([gradient16(12, 20), np.full((12, 20), 65535)], axis=-1)  # grey + alpha
    (tmp_path / "la.png").write_bytes(png_bytes(alpha, 16, 4))
    got = load_image_file(tmp_path / "la.png", 1).astype(int)
    assert np.abs(got[0] - to8(alpha[..., 0])).max() <= 1


def test_float_tiff_on_the_unit_scale_is_scaled(tmp_path):
    f = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
    Image.fromarray(f).save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as img:
        assert img.mode == "F"
    grey = load_image_file(tmp_path / "f.tif", 1)
    np.testing.assert_array_equal(grey[0], np.rint(f.astype(np.float64) * 255).astype(np.uint8))
    assert 120 < grey.mean() < 135                       # was 0.0002: black


def test_folder_training_reads_16_bit_images_like_their_8_bit_twins(tmp_path, test_images):
    for depth in (8, 16):
        for k, img in enumerate(test_images):
            path = tmp_path / str(depth) / ("a" if k % 2 else "b") / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img if depth == 8 else img.astype(np.uint16) * 257).save(path)
    eight, sixteen = (ImageFolder(tmp_path / d, size=36, channels=1) for d in ("8", "16"))
    a, la = eight.get_batch(np.arange(4))
    b, lb = sixteen.get_batch(np.arange(4))
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a, b)


def test_predict_on_16_bit_png_answers_as_on_the_8_bit_png(run_dir, tmp_path, test_images,
                                                          capsys):
    paths = []
    for k, img in enumerate(test_images[:2]):
        for depth in (8, 16):
            paths.append(str(tmp_path / f"{k}-{depth}.png"))
            Image.fromarray(img if depth == 8 else img.astype(np.uint16) * 257).save(paths[-1])
    assert main(["predict", str(run_dir), *paths]) == 0
    blocks = predictions(capsys.readouterr().out)
    assert [b[0] for b in blocks] == paths
    assert blocks[0][1] == blocks[1][1] and blocks[2][1] == blocks[3][1]


def test_unusable_pixel_formats_are_refused_in_one_line(run_dir, tmp_path, capsys):
    wide = np.linspace(0, 255, 16 * 16, dtype=np.float32).reshape(16, 16)    # floats on 0..255
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    nan = np.zeros((16, 16), np.float32)
    nan[3, 4] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    Image.fromarray(np.arange(256, dtype=np.int32).reshape(16, 16) * 1000).save(tmp_path / "i.tif")
    user_error(["predict", str(run_dir), str(tmp_path / "wide.tif")], capsys, "wide.tif",
               "from 0 to 255", "[0, 1]")
    user_error(["predict", str(run_dir), str(tmp_path / "nan.tif")], capsys, "nan.tif", "NaN")
    user_error(["predict", str(run_dir), str(tmp_path / "i.tif")], capsys, "i.tif",
               "32-bit integer", "8 or 16 bits")


# ----------------------------------------------------------------------------- only regular files

@needs_fifo
def test_a_fifo_in_a_training_folder_is_refused_not_waited_for(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for k in range(3):
                path = tmp_path / split / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8), 60 * k, np.uint8)).save(path)
    fifo = tmp_path / "train" / "b" / "pipe.png"
    os.mkfifo(fifo)
    result = python_m("train", "--dataset", "folder", "--data-dir", str(tmp_path), "--epochs",
                      "1", "--batch-size", "2", "--out", str(tmp_path / "run"), "--no-progress",
                      timeout=90)
    refused(result, str(fifo), "FIFO")
    assert not (tmp_path / "run" / "last.npz").exists()
    with pytest.raises(DataError, match="pipe.png: is a FIFO"):
        ImageFolder(tmp_path / "train", size=8)


@needs_fifo
def test_a_file_swapped_for_a_fifo_after_listing_is_refused(tmp_path):
    """ImageFolder lists files once; the decoder must still never open a FIFO."""
    script = f"""
import os, numpy as np
from PIL import Image
from tinyalexnet.datasets import ImageFolder
from tinyalexnet.errors import DataError
root = {str(tmp_path)!r}
for cls in ("a", "b"):
    os.makedirs(os.path.join(root, cls))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(root, cls, "1.png"))
ds = ImageFolder(root, size=8)
os.remove(os.path.join(root, "b", "1.png"))
os.mkfifo(os.path.join(root, "b", "1.png"))
try:
    ds.get_batch([1])
except DataError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path / 'b' / '1.png'}: is a FIFO (named pipe), " \
                                    "not an image file"


@needs_fifo
def test_a_fifo_as_checkpoint_is_refused_not_waited_for(run_dir, tmp_path):
    fifo = tmp_path / "last.npz"
    os.mkfifo(fifo)
    for args in (["evaluate", str(fifo), "--limit", "10"], ["evaluate", str(tmp_path)],
                 ["train", "--resume", str(fifo), "--no-progress"],
                 ["predict", str(fifo), str(run_dir / "history.png")]):
        line = refused(python_m(*args, timeout=90), str(fifo))
        assert "FIFO" in line or "regular file" in line, line


def test_predict_says_what_a_path_that_is_not_a_file_is(run_dir, tmp_path, capsys):
    ck = str(run_dir / "last.npz")
    (tmp_path / "folder.png").mkdir()
    os.symlink("loop-b.png", tmp_path / "loop-a.png")
    os.symlink("loop-a.png", tmp_path / "loop-b.png")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    cases = [("folder.png", "is a folder"), ("loop-a.png", "symbolic link loop"),
             ("dangling.png", "broken symbolic link"), ("absent.png", "no such image file")]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")
        cases.append(("pipe.png", "is a FIFO"))
    for name, what in cases:
        _, line = user_error(["predict", ck, str(tmp_path / name)], capsys, name, what)
        if what != "no such image file":
            assert "no such" not in line, line
    with pytest.raises(DataError, match="symbolic link loop"):
        load_image_file(tmp_path / "loop-a.png")


# ----------------------------------------------------------------------------- size and memory

def png_header_only(width, height):
    """A 'PNG' that claims width x height grey pixels and holds none (its IDAT is empty):
    decoding it fails, so only a bound checked from the header can name its size."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_thin_and_huge_images_are_refused_before_decoding(run_dir, tmp_path, capsys):
    thin = tmp_path / "thin.png"
    Image.new("L", (1_000_000, 1)).save(thin)       # what the issue measured: 1.75 GB in predict
    assert thin.stat().st_size < 2_000
    _, line = user_error(["predict", str(run_dir), str(thin)], capsys, "thin.png",
                         "1,000,000x1", "too large")
    assert f"at most {folder_module.MAX_SIDE:,} pixels a side" in line
    good = tmp_path / "good.png"
    Image.new("L", (28, 28)).save(good)
    out, _ = user_error(["predict", str(run_dir), str(good), str(thin)], capsys, "thin.png")
    assert out == ""                 # every header is read before the first answer
    for name, (w, h) in {"tall.png": (1, 1_000_000), "huge.png": (9_000, 9_000),
                         "bomb.png": (60_000, 60_000)}.items():
        (tmp_path / name).write_bytes(png_header_only(w, h))
        user_error(["predict", str(run_dir), str(tmp_path / name)], capsys, name, "too large")
    assert 9_000 * 9_000 > folder_module.MAX_PIXELS and 9_000 < folder_module.MAX_SIDE
    (tmp_path / "small.png").write_bytes(png_header_only(30, 20))    # the same file, small
    user_error(["predict", str(run_dir), str(tmp_path / "small.png")], capsys, "small.png",
               "cannot decode")


def test_a_thin_image_within_bounds_is_resampled_as_a_whole_resize_would(tmp_path):
    rng = np.random.default_rng(1)
    strip = rng.integers(0, 256, (3, 20_000)).astype(np.uint8)
    Image.fromarray(strip).save(tmp_path / "strip.png")
    got = load_image_file(tmp_path / "strip.png", 1, 36)
    # The reference: scale the whole strip to cover 36x36 (240,000 x 36), cut the centre.
    whole = Image.fromarray(strip).resize((240_000, 36), Image.BILINEAR)
    centre = np.asarray(whole.crop((120_000 - 18, 0, 120_000 + 18, 36)))
    assert got.shape == (1, 36, 36)
    assert np.abs(got[0].astype(int) - centre).max() <= 1


def test_predict_streams_its_images_in_batches(run_dir, tmp_path, test_images, capsys,
                                               monkeypatch):
    paths = []
    for k in range(7):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(test_images[k % 4]).save(paths[-1])
    assert main(["predict", str(run_dir), *paths, "--batch-size", "64"]) == 0
    together = predictions(capsys.readouterr().out)
    calls = []
    real_load_files = cli.load_image_files

    def load_files(batch_paths, shape):
        calls.append((len(batch_paths), sys.stdout.getvalue().count("\n")))
        return real_load_files(batch_paths, shape)

    monkeypatch.setattr(cli, "load_image_files", load_files)
    assert main(["predict", str(run_dir), *paths, "--batch-size", "3"]) == 0
    streamed = predictions(capsys.readouterr().out)
    # three decodes of at most 3 images; each batch's answers (6 lines an image) printed
    # before the next batch is decoded
    assert calls == [(3, 0), (3, 18), (1, 36)]
    assert [b[0] for b in streamed] == paths == [b[0] for b in together]
    for (_, a), (_, b) in zip(streamed, together):
        assert [c for c, _ in a] == [c for c, _ in b]
        assert np.allclose([p for _, p in a], [p for _, p in b], atol=0.011)
    user_error(["predict", str(run_dir), paths[0], "--batch-size", "0"], capsys, "--batch-size")


# ----------------------------------------------------------------------------- evaluate and its PNG

@pytest.mark.parametrize("how", ["chmod", "squatted"])
def test_evaluate_prints_its_results_before_a_png_that_cannot_be_written(run_dir, tmp_path,
                                                                         capsys, how):
    if how == "chmod" and IS_ROOT:
        pytest.skip("running as root: chmod does not stop root's writes (the 'squatted' case "
                    "makes the write fail instead)")
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(run_dir / "last.npz", folder / "last.npz")
    png = folder / "last-fashion-mnist-subset-test-confusion.png"
    if how == "chmod":
        folder.chmod(0o555)
    else:
        png.mkdir()                  # the PNG's name is taken by a folder: the write fails
    try:
        out, line = user_error(["evaluate", str(folder / "last.npz"), "--limit", "50",
                                "--no-progress"], capsys, str(png), "could not be written")
    finally:
        folder.chmod(0o755)
    assert "top-1 error" in out and "50 images" in out
    assert len([l for l in out.splitlines() if l.startswith("  ")]) == 10     # per class
    assert sorted(os.listdir(folder)) == sorted(["last.npz"] + ([png.name] if png.is_dir()
                                                                else []))


def test_a_png_cut_short_by_a_full_disk_leaves_the_old_one(run_dir, tmp_path, capsys,
                                                           monkeypatch):
    from matplotlib.figure import Figure
    png = tmp_path / "confusion.png"
    png.write_bytes(b"the picture of an earlier evaluation")

    def disk_full(self, fname, **kwargs):               # some bytes, then no space left
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG half")
        else:
            fname.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    out, _ = user_error(["evaluate", str(run_dir), "--limit", "20", "--no-progress", "--plot",
                         str(png)], capsys, str(png), "No space left on device")
    assert "top-1 error" in out
    assert png.read_bytes() == b"the picture of an earlier evaluation"
    assert os.listdir(tmp_path) == ["confusion.png"]        # no temporary file left behind


def test_plot_mistakes_are_refused_before_evaluating(run_dir, tmp_path, capsys, monkeypatch):
    import tinyalexnet.cli as cli
    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran before --plot was checked")

    monkeypatch.setattr(cli, "evaluate", evaluate)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "folder.png").mkdir()
    ck = str(run_dir / "last.npz")
    for plot, expected in [(tmp_path / "missing" / "c.png", "no such folder"),
                           (tmp_path / "c.xyz", "unknown picture format"),
                           (tmp_path / "confusion", "no extension"),
                           (tmp_path / "folder.png", "is a folder"),
                           (a_file / "c.png", "is not a folder")]:
        user_error(["evaluate", ck, "--plot", str(plot)], capsys, str(plot), expected)
    if not IS_ROOT:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        user_error(["evaluate", ck, "--plot", str(locked / "c.png")], capsys, "not writable")


def test_download_into_an_unwritable_place_is_refused_before_fetching(run_dir, tmp_path,
                                                                      capsys, monkeypatch):
    from tinyalexnet.datasets import download
    fetched = []
    monkeypatch.setattr(download, "fetch", lambda url, dest: fetched.append(url))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    places = [a_file / "data"]                 # a "folder" that is a file: fails for root too
    if not IS_ROOT:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        places.append(locked / "data")
    for place in places:
        user_error(["evaluate", str(run_dir), "--dataset", "mnist", "--data-dir", str(place),
                    "--download"], capsys, str(place), "cannot write the download")
    assert fetched == []
    # the default place, moved by TINYALEXNET_DATA_ROOT, in a real process
    result = python_m("train", "--dataset", "mnist", "--download", "--out",
                      str(tmp_path / "run"), "--no-progress",
                      env=dict(os.environ, TINYALEXNET_DATA_ROOT=str(a_file / "root")))
    refused(result, "cannot write the download", "TINYALEXNET_DATA_ROOT")


def test_ten_crop_on_a_model_trained_without_crops_warns(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--ten-crop", "--limit", "30", "--no-progress",
                 "--plot", str(tmp_path / "a.png")]) == 0
    out, err = capsys.readouterr()
    assert "ten crops" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "without random crops" in \
        lines[0] and "--augment" in lines[0]
    augmented = tmp_path / "augmented"
    assert main(["train", "--epochs", "1", "--augment", "--out", str(augmented), *QUICK]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(augmented), "--ten-crop", "--limit", "30", "--no-progress",
                 "--plot", str(tmp_path / "b.png")]) == 0
    assert "warning" not in capsys.readouterr().err



def test_train_with_ten_crop_but_no_crops_warns_before_training(tmp_path, capsys):
    """The same warning from train --ten-crop, printed first (not after the epochs), and not
    when the run trains with --augment."""
    assert main(["train", "--epochs", "1", "--ten-crop", "--out", str(tmp_path / "plain"),
                 *QUICK]) == 0
    out, err = capsys.readouterr()
    assert "with ten crops" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: this run trains without random "
                                                   "crops") and "--augment" in lines[0]
    assert main(["train", "--epochs", "1", "--ten-crop", "--augment", "--out",
                 str(tmp_path / "augmented"), *QUICK]) == 0
    assert "warning" not in capsys.readouterr().err

def test_evaluate_writes_no_picture_into_a_run_in_progress(run_dir, tmp_path, capsys,
                                                           monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    shutil.copy(run_dir / "last.npz", busy / "last.npz")
    owner = RunFolder.claim(busy)                # a run in progress holds its folder
    try:
        def evaluate(*args, **kwargs):
            raise AssertionError("evaluated before refusing")

        monkeypatch.setattr(cli, "evaluate", evaluate)
        for plot in ([], ["--plot", str(busy / "c.png")]):
            _, line = user_error(["evaluate", str(busy), "--limit", "20", "--no-progress", *plot],
                                 capsys, "in use by pid", "--plot")
            assert "run in progress" in line
        monkeypatch.undo()
        elsewhere = tmp_path / "c.png"
        assert main(["evaluate", str(busy), "--limit", "20", "--no-progress", "--plot",
                     str(elsewhere)]) == 0
        assert elsewhere.is_file()
    finally:
        owner.unlock()
    assert sorted(os.listdir(busy)) == ["last.npz", "owner.lock"]


def test_a_folder_named_last_npz_is_called_a_folder(tmp_path, capsys):
    (tmp_path / "last.npz").mkdir()
    _, line = user_error(["evaluate", str(tmp_path)], capsys, str(tmp_path / "last.npz"),
                         "is a folder")
    assert "FIFO" not in line


# ----------------------------------------------------------------------------- where output goes

def test_training_goes_on_when_its_reader_stops_reading(tmp_path):
    """``train ... | head -1``: the pipe closes after the first line."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinyalexnet", "train", "--epochs", "1",
                             "--out", str(run), *QUICK], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    first = proc.stdout.readline()
    proc.stdout.close()                            # what head does after its line
    err = proc.stderr.read().decode(errors="replace")
    proc.wait(timeout=300)
    assert first.startswith(b"training ")
    assert proc.returncode == 0 and err == "", err  # the reader chose to stop: nothing to say
    assert checkpoint.read_meta(run / "last.npz")["epoch"] == 1
    assert (run / "test.json").is_file()              # the report after the lines it lost


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_standard_output_loses_lines_not_the_run(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with open("/dev/full", "w") as full:           # train ... > /dev/full
        monkeypatch.setattr(sys, "stdout", full)
        code = main(["train", "--epochs", "1", "--out", str(run), *QUICK])
    monkeypatch.undo()
    one_line_error(code, capsys.readouterr().err, "cannot write to standard output",
                   "No space left on device")
    assert checkpoint.read_meta(run / "last.npz")["epoch"] == 1
    assert (run / "test.json").is_file()


def test_class_folders_whose_names_are_not_utf8(tmp_path, capsys):
    root = os.fsencode(tmp_path / "data")
    classes = [b"caf\xe9", b"na\xefve"]                 # Latin-1 bytes: not valid UTF-8
    rng = np.random.default_rng(0)
    for split in (b"train", b"test"):
        for c in classes:
            folder = os.path.join(root, split, c)
            os.makedirs(folder)
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                    os.fsdecode(os.path.join(folder, b"%d.png" % k)))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-dir", os.fsdecode(root), "--epochs", "1",
                 "--batch-size", "3", "--out", str(run), "--no-progress"]) == 0
    assert (run / "confusion_matrix.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "  caf\\xe9  " in out and "  na\\xefve" in out      # as Python shows such names
    assert (run / "last-folder-test-confusion.png").stat().st_size > 0


# ----------------------------------------------------------------------------- names and numbers

def test_predict_prints_a_file_name_that_is_not_utf8(run_dir, tmp_path, test_images):
    folder = os.fsencode(tmp_path)
    name = folder + b"/caf\xe9-\xff.png"                # Latin-1 bytes: not valid UTF-8
    Image.fromarray(test_images[0]).save(os.fsdecode(name))
    # PYTHONIOENCODING=utf-8: standard output strict UTF-8, as under a UTF-8 locale such as
    # en_US.UTF-8 (this machine's C locale would let Python write the raw bytes instead)
    for env in ({"PYTHONIOENCODING": "utf-8"}, {}):
        result = python_m(b"predict", os.fsencode(run_dir), name, env=dict(os.environ, **env))
        err = result.stderr.decode(errors="replace")
        assert result.returncode == 0 and "Traceback" not in err, (env, err)
        lines = result.stdout.decode().splitlines()      # the output itself is valid UTF-8
        assert lines[0] == os.fsdecode(folder) + "/caf\\xe9-\\xff.png" and len(lines) == 6


def test_info_refuses_sizes_it_cannot_build(capsys):
    user_error(["info", "alexnet", "--num-classes", "100000000"], capsys, "--num-classes",
               "100,000,000", "at most 30,000")
    user_error(["info", "alexnet_small", "--in-channels", "1000000"], capsys, "--in-channels",
               "at most 1,000")
    assert main(["info", "alexnet_small", "--num-classes", "21841"]) == 0   # ImageNet-21k's
    assert "Total parameters: " in capsys.readouterr().out
