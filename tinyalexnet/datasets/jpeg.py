"""Fast JPEG decoding: libjpeg-turbo through ``simplejpeg``, pixel for pixel what Pillow gives.

Pillow and simplejpeg both decode JPEGs with libjpeg-turbo, with the same
settings by default (the accurate integer IDCT, "fancy" chroma upsampling).  So
for an ordinary JPEG they return the same pixels, and the only difference is
the work around the decoder: simplejpeg hands libjpeg-turbo the whole file at
once and gets a NumPy array back, where Pillow feeds it in blocks through its
plug-in machinery.  Measured on 500x375 photographs at quality 90 (the typical
ImageNet size), an image read as ``ImageFolder`` reads it (decoded, resized,
cropped) was 1.16-1.20x faster on a busy machine and as fast (1.00x) on a quiet one
(BENCHMARKS.md, "Preparing image data").

libjpeg-turbo can also scale while decoding (it skips high frequencies of the
DCT: a 1/2-size image costs about a third of a full one).  Pillow uses this
through ``Image.draft``, with factors 1/2, 1/4 and 1/8, never below the size
asked for; :func:`draft_scale` is Pillow's rule, so both decoders scale alike.
libjpeg-turbo has finer factors too (3/4, 5/8, ...), but they give other
pixels than Pillow (a store would then depend on which decoder made it) and
decoded only 1.04x faster than a full image when measured, so they are not used.

:func:`decode` returns None for anything that is not a plain JPEG
(CMYK, 12-bit, a warning from libjpeg-turbo such as a truncated file): the
caller then lets Pillow decide, so errors and odd files are handled exactly as
before.  ``tests/test_jpeg.py`` checks that both decoders give the same
bytes on JPEGs of every subsampling, grey, progressive, and at every draft
scale.
"""
try:
    import simplejpeg
except ImportError:         # optional: without it, Pillow decodes everything
    simplejpeg = None

JPEG_SIGNATURE = b"\xff\xd8\xff"
COLOURSPACES = {"YCbCr", "Gray"}        # what libjpeg-turbo converts as Pillow does


def available():
    """Whether the fast decoder (simplejpeg) is installed."""
    return simplejpeg is not None


def draft_scale(width, height, size):
    """Pillow's ``JpegImageFile.draft`` rule: decode at 1/s, s the largest of 8, 4, 2, 1
    with s <= min(width // w, height // h), ``size`` = (h, w) the size asked for."""
    fits = min(width // size[1], height // size[0])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def header(data):
    """(width, height) of JPEG bytes ``data``, or None if simplejpeg should not decode it."""
    if simplejpeg is None or not data.startswith(JPEG_SIGNATURE):
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if colourspace in COLOURSPACES else None


def decode(data, channels, width, height, scale):
    """JPEG bytes as uint8 (h, w, channels) at 1/``scale`` of (``height``, ``width``), or None.

    ``channels`` = 1 decodes the luma (Y) channel, as Pillow's ``draft("L")``
    does; 3 gives RGB.  ``strict``: any warning from libjpeg-turbo (a truncated
    or damaged file) gives None instead of a patched-up image, so that Pillow
    can refuse the file or decode it as it always did.
    """
    h, w = -(-height // scale), -(-width // scale)
    try:
        out = simplejpeg.decode_jpeg(data, "GRAY" if channels == 1 else "RGB",
                                     min_height=h, min_width=w, strict=True)
    except ValueError:
        return None
    if out.shape[:2] != (h, w):          # libjpeg-turbo chose another factor: not Pillow's
        return None
    return out
