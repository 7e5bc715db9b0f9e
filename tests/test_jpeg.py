"""simplejpeg (datasets/jpeg.py) gives Pillow's pixels, or hands the file to Pillow."""
import numpy as np
import pytest

from image_sources import jpeg_bytes, photo
from tinyalexnet.datasets import folder as folder_module
from tinyalexnet.datasets import jpeg
from tinyalexnet.datasets.folder import load_image_file
from tinyalexnet.errors import DataError


JPEG_CASES = {            # name: (height, width, Pillow save options, grey)
    "420": (75, 100, {"quality": 90}, False),
    "444": (60, 90, {"quality": 95, "subsampling": 0}, False),
    "422": (61, 77, {"quality": 85, "subsampling": 1}, False),
    "progressive": (80, 64, {"quality": 90, "progressive": True}, False),
    "grey": (70, 50, {"quality": 90}, True),
    "draft 1/2": (90, 110, {"quality": 90}, False),
    "draft 1/4": (150, 200, {"quality": 90}, False),
    "draft 1/8": (300, 400, {"quality": 90}, False),
}


@pytest.mark.parametrize("case", list(JPEG_CASES))
@pytest.mark.parametrize("channels", [3, 1])
def test_simplejpeg_gives_pillows_pixels(tmp_path, case, channels, monkeypatch):
    pytest.importorskip("simplejpeg")
    h, w, options, grey = JPEG_CASES[case]
    array = photo(np.random.default_rng(len(case)), h, w)
    if grey:
        array = array.mean(2).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(array, **options))
    fast_calls = []
    original = jpeg.decode
    monkeypatch.setattr(jpeg, "decode", lambda *a: fast_calls.append(a[-1]) or original(*a))
    for size in (32, (24, 40)):
        pillow = load_image_file(path, channels, size, decoder="pillow")
        fast = load_image_file(path, channels, size, decoder="simplejpeg")
        np.testing.assert_array_equal(fast, pillow)
    assert len(fast_calls) == 2                       # the fast path ran, and did not fall back
    from PIL import Image
    with Image.open(path) as img:                     # Pillow's own choice of scale at 32
        img.draft("RGB", (32, 32))
        assert fast_calls[0] == -(-w // img.size[0])
    if case.startswith("draft"):
        assert fast_calls[0] == int(case[-1])         # scaled while decoding


def test_odd_jpegs_fall_back_to_pillow(tmp_path):
    pytest.importorskip("simplejpeg")
    from PIL import Image
    cmyk = np.random.default_rng(0).integers(0, 255, (30, 40, 4)).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg")
    good = jpeg_bytes(photo(np.random.default_rng(1), 60, 80), quality=90)
    (tmp_path / "cut.jpg").write_bytes(good[:len(good) // 2])
    assert folder_module._load_fast(tmp_path / "cmyk.jpg", 3, (16, 16)) is None
    assert folder_module._load_fast(tmp_path / "cut.jpg", 3, (16, 16)) is None
    np.testing.assert_array_equal(load_image_file(tmp_path / "cmyk.jpg", 3, 16, "simplejpeg"),
                                  load_image_file(tmp_path / "cmyk.jpg", 3, 16, "pillow"))
    for decoder in ("simplejpeg", "pillow"):            # Pillow refuses it either way
        with pytest.raises(DataError, match="cut.jpg: cannot decode"):
            load_image_file(tmp_path / "cut.jpg", 3, 16, decoder)


def test_size_limits_hold_on_the_fast_path(tmp_path, monkeypatch):
    pytest.importorskip("simplejpeg")
    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg_bytes(photo(np.random.default_rng(2), 40, 300), quality=90))
    monkeypatch.setattr(folder_module, "MAX_SIDE", 100)
    messages = []
    for decoder in ("pillow", "simplejpeg"):
        with pytest.raises(DataError) as err:
            load_image_file(path, 3, 16, decoder)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "150x20 pixels is too large" in messages[0]  # at 1/2


def test_unknown_or_missing_decoder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown image decoder 'turbo'"):
        folder_module.resolve_decoder("turbo")
    monkeypatch.setattr(jpeg, "simplejpeg", None)
    assert folder_module.resolve_decoder("auto") == "pillow"
    with pytest.raises(DataError, match="pip install simplejpeg"):
        folder_module.resolve_decoder("simplejpeg")
