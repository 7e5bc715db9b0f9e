"""Winograd's minimal filtering: a 3x3 convolution with 2.25 times fewer multiplications.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2016).
im2col spends 9 multiplications on every output value of a 3x3 layer (per
input channel).  Winograd computes a 2x2 block of outputs from a 4x4 block of
input, in 16 multiplications instead of 4 * 9 = 36.

**1-D, F(2, 3)**: two outputs of a 3-tap filter g from four inputs d::

    y0 = d0 g0 + d1 g1 + d2 g2           6 multiplications
    y1 = d1 g0 + d2 g1 + d3 g2

    m0 = (d0 - d2) g0                    m1 = (d1 + d2) (g0 + g1 + g2) / 2
    m3 = (d1 - d3) g2                    m2 = (d2 - d1) (g0 - g1 + g2) / 2
    y0 = m0 + m1 + m2                    y1 = m1 - m2 - m3          4 multiplications

The sums of g are the same for every input, so they are paid once per filter;
the sums of d once per input tile, shared by every filter.  In matrix form::

    y = A^T [ (G g) * (B^T d) ]           A^T (2, 4), G (4, 3), B^T (4, 4), * element-wise

**2-D, F(2x2, 3x3)**: the same transform along rows and along columns (nesting)::

    Y = A^T [ (G g G^T) * (B^T d B) ] A   d (4, 4) input tile, g (3, 3) kernel, Y (2, 2)

and summed over input channels c *before* the output transform, since A^T . A
is linear::

    U[f, c] = G g[f, c] G^T                       (4, 4) per filter and channel
    V[c, t] = B^T d[c, t] B                       (4, 4) per channel and tile t
    M[f, t] = sum_c U[f, c] * V[c, t]             16 matrix products, one per tile element:
                                                  M[xi, nu] = U[xi, nu] (F, C) @ V[xi, nu] (C, P)
    Y[f, t] = A^T M[f, t] A                       (2, 2) outputs of tile t

The 16 products are where the multiply-adds are: 16 per (f, c, tile) instead
of 36, that is 2.25x fewer.  The transforms are products with tiny constant
matrices (written here as dense matrix products over all tiles at once: a few
passes over memory, no loop over images or tiles).

Shapes (groups G' split C and F as in Conv2d; P = TH * TW * N tiles)::

    x (N, C, H, W), weight (F, C/G', 3, 3), bias (F,)  ->  y (N, F, OH, OW)
    OH = H + 2p - 2, TH = ceil(OH / 2) tiles down (TW across); a last, odd row or
    column of tiles is computed on zero padding and cut off.

**Backward.**  Each transform t -> L t L^T is linear; its adjoint (backward) is
dt = L^T dy L: the same product with the transposed matrix.  So, from dY::

    dM = A dY A^T                         (4, 4) per (f, tile)
    dU = dM @ V^T, dV = U^T @ dM          the 16 products, as in any matrix product
    dW = G^T dU G                         the filter gradient, back through G
    dd = B dV B^T                         the gradient of every input tile
    dx = the tiles' gradients added back where the tiles overlap (2 pixels each way)

Other tile sizes: the code takes any (A^T, G, B^T) triple.  ``F4x4_3x3`` computes
4x4 outputs from 6x6 tiles with 36 multiplications instead of 144 (4x fewer)
but larger constants in its transforms lose more float32 accuracy;
``winograd_matrices`` builds a triple for any outputs m, taps r and
interpolation points (Toom-Cook).  Conv2d uses F(2x2, 3x3) (see ``conv.py``).
"""
from fractions import Fraction
from collections import namedtuple

from ..backend import get_array_module
from ..errors import ShapeError
from .im2col import conv_output_size

# A minimal-filtering algorithm F(m, r): m outputs of an r-tap filter from n = m + r - 1 inputs.
# AT (m, n), G (n, r), BT (n, n), as nested tuples of Python numbers (layer code never holds
# NumPy arrays: each call builds them on the input's backend and dtype).
Winograd = namedtuple("Winograd", "m r AT G BT")

# F(2, 3): Lavin and Gray's matrices (interpolation points 0, 1, -1 and infinity).
F2x2_3x3 = Winograd(
    m=2, r=3,
    AT=((1, 1, 1, 0),
        (0, 1, -1, -1)),
    G=((1, 0, 0),
       (0.5, 0.5, 0.5),
       (0.5, -0.5, 0.5),
       (0, 0, 1)),
    BT=((1, 0, -1, 0),
        (0, 1, 1, 0),
        (0, -1, 1, 0),
        (0, 1, 0, -1)))


def winograd_matrices(m, r, points):
    """(A^T, G, B^T) of F(m, r) from n - 1 = m + r - 2 distinct finite points (plus infinity).

    Toom-Cook: a polynomial of degree n - 1 is known from its values at n - 1
    points and its leading coefficient ("the value at infinity").  With
    p_k the points, f_k = prod_{j != k} (p_k - p_j) and L_k(x) = prod_{j != k} (x - p_j)::

        A^T[:, k] = (1, p_k, ..., p_k^(m-1))      the last column (0, ..., 0, 1)
        G[k]      = (1, p_k, ..., p_k^(r-1)) / f_k  the last row  (0, ..., 0, 1)
        B^T[k]    = coefficients of L_k(x)        the last row: coefficients of prod_j (x - p_j)

    Computed exactly (fractions), returned as floats.  Small points (0, +-1,
    +-1/2, +-2) keep the constants small; large ones make float32 lose digits.
    """
    n = m + r - 1
    points = [Fraction(p) for p in points]
    if len(points) != n - 1 or len(set(points)) != n - 1:
        raise ShapeError(f"winograd_matrices: F({m}, {r}) needs {n - 1} distinct points, "
                         f"got {len(points)} ({len(set(points))} distinct)")

    def poly(roots):                                 # coefficients of prod (x - root), low first
        c = [Fraction(1)]
        for root in roots:
            c = [a - root * b for a, b in zip([Fraction(0)] + c, c + [Fraction(0)])]
        return c + [Fraction(0)] * (n - len(c))

    AT = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    G, BT = [], []
    for k, p in enumerate(points):
        others = points[:k] + points[k + 1:]
        f = 1
        for q in others:
            f *= p - q
        G.append([p ** j / f for j in range(r)])
        BT.append(poly(others))
    G.append([Fraction(int(j == r - 1)) for j in range(r)])
    BT.append(poly(points))
    as_float = lambda rows: tuple(tuple(float(v) for v in row) for row in rows)  # noqa: E731
    return Winograd(m, r, as_float(AT), as_float(G), as_float(BT))


# F(4, 3) with the points 0, 1, -1, 2, -2 (and infinity): 6x6 tiles.
F4x4_3x3 = winograd_matrices(4, 3, (0, 1, -1, 2, -2))


def _matrix(xp, rows, dtype, transpose=False):
    a = xp.asarray(rows, dtype=dtype)
    return xp.ascontiguousarray(a.T) if transpose else a


def kron(L):
    """kron(L, L): the (a*a, b*b) matrix with kron[i*a + j, k*b + l] = L[i, k] * L[j, l]."""
    a, b = L.shape
    return (L[:, None, :, None] * L[None, :, None, :]).reshape(a * a, b * b)


def transform(L, t):
    """L t L^T over the two leading axes, for all K trailing entries at once.

    L (a, b), t (b, b, K) -> (a, a, K).  Written out, (L t L^T)[i, j] =
    sum_{k, l} L[i, k] L[j, l] t[k, l]: each of the a*a results is a weighted sum
    of the b*b numbers of the tile, with weights L[i, k] L[j, l], the Kronecker
    product of L with itself.  So the whole transform of every tile is ONE
    matrix product, (a*a, b*b) @ (b*b, K).  One pass over the K tiles' numbers:
    the data are large and the matrix tiny, so passes over memory cost the time,
    not multiplications (two products, L t and then (L t) L^T, take twice the
    passes for half the multiplications).
    """
    xp = get_array_module(t)
    a, b = L.shape
    return xp.matmul(kron(L), t.reshape(b * b, -1)).reshape(a, a, -1)


def _sizes(x_shape, padding, w):
    N, C, H, W = x_shape
    OH = conv_output_size(H, w.r, 1, padding)
    OW = conv_output_size(W, w.r, 1, padding)
    TH, TW = -(-OH // w.m), -(-OW // w.m)                   # tiles, rounded up
    return N, C, H, W, OH, OW, TH, TW


def input_tiles(x, padding, w=F2x2_3x3):
    """(N, C, H, W) -> d (n, n, C*TH*TW*N): every n x n input tile, tiles m apart.

    d[i, j, (c, th, tw, nb)] = x_pad[nb, c, m*th + i, m*tw + j].  Tiles overlap by
    r - 1 pixels.  One strided view of a batch-last, zero-padded copy of x (the
    padding is p on the top and left, and enough on the bottom and right to
    cover the last tile), copied once.
    """
    xp = get_array_module(x)
    N, C, H, W, OH, OW, TH, TW = _sizes(x.shape, padding, w)
    n, p = w.m + w.r - 1, padding
    Hp, Wp = w.m * TH + w.r - 1, w.m * TW + w.r - 1
    x_pad = xp.empty((C, Hp, Wp, N), dtype=x.dtype)
    x_pad[:, :p] = 0                                         # zero the border only: the
    x_pad[:, p + H:] = 0                                     # interior is overwritten next
    x_pad[:, :, :p] = 0
    x_pad[:, :, p + W:] = 0
    x_pad[:, p:p + H, p:p + W] = x.transpose(1, 2, 3, 0)
    sc, sh, sw, sn = x_pad.strides
    view = xp.lib.stride_tricks.as_strided(
        x_pad, shape=(n, n, C, TH, TW, N),
        strides=(sh, sw, sc, w.m * sh, w.m * sw, sn))
    return xp.ascontiguousarray(view).reshape(n, n, C * TH * TW * N)


def add_tiles(dd, x_shape, padding, w=F2x2_3x3):
    """The adjoint of ``input_tiles``: dd (n, n, C*TH*TW*N) -> dx (N, C, H, W).

    A pixel lies in up to ((r-1)/m + 1)^2 tiles; its gradient is the sum of
    theirs.  As in col2im, the loop runs over the n*n positions inside a tile:
    for one position (i, j) the tiles' pixels are a strided slice in which every
    pixel appears once, so ``+=`` is enough.
    """
    xp = get_array_module(dd)
    N, C, H, W, OH, OW, TH, TW = _sizes(x_shape, padding, w)
    n, m, p = w.m + w.r - 1, w.m, padding
    dd = dd.reshape(n, n, C, TH, TW, N)
    dx = xp.zeros((C, m * TH + w.r - 1, m * TW + w.r - 1, N), dtype=dd.dtype)
    for i in range(n):
        for j in range(n):
            dx[:, i:i + m * TH:m, j:j + m * TW:m] += dd[i, j]
    return xp.ascontiguousarray(dx[:, p:p + H, p:p + W].transpose(3, 0, 1, 2))


def _check(x, weight, w, groups):
    F, Cg, kh, kw = weight.shape
    if (kh, kw) != (w.r, w.r):
        raise ShapeError(f"winograd: F({w.m}x{w.m}, {w.r}x{w.r}) needs {w.r}x{w.r} kernels, "
                         f"got weight shape {tuple(weight.shape)}")
    if x.ndim != 4 or x.shape[1] != Cg * groups or F % groups:
        raise ShapeError(f"winograd: x (N, {Cg * groups}, H, W) expected for weight "
                         f"{tuple(weight.shape)} with groups={groups}, got x {tuple(x.shape)}")


def winograd_conv2d_forward(x, weight, bias, padding=0, groups=1, w=F2x2_3x3, keep_tiles=False):
    """Stride-1 convolution by Winograd's F(m x m, r x r); returns (out, cache).

    x (N, C, H, W), weight (F, C/groups, r, r), bias (F,) -> out (N, F, OH, OW),
    the same numbers as Conv2d (up to rounding).  ``cache`` holds what
    ``winograd_conv2d_backward`` needs: the transformed filters U (n^2/r^2 times
    the weights' size) and x, from which backward rebuilds the transformed
    tiles V, as Conv2d rebuilds im2col's matrix; ``keep_tiles=True`` keeps V
    instead (n^2 TH TW / (H W) times x's memory, about 4.6x for AlexNet's 13x13
    maps) and saves backward that work.
    """
    _check(x, weight, w, groups)
    xp = get_array_module(x)
    N, C, H, W, OH, OW, TH, TW = _sizes(x.shape, padding, w)
    F, Cg = weight.shape[:2]
    n, m, G_ = w.m + w.r - 1, w.m, groups
    AT, G, BT = (_matrix(xp, a, x.dtype) for a in (w.AT, w.G, w.BT))
    P = TH * TW * N
    # U = G g G^T for every (f, c): kron(G) (n*n, r*r) @ g (r*r, F*Cg) -> (n*n, G', F/G', Cg).
    # The weight's rows are the (f, c) kernels: BLAS reads it transposed in place.
    U = xp.matmul(kron(G), weight.reshape(F * Cg, w.r * w.r).T).reshape(n * n, G_, F // G_, Cg)
    # V = B^T d B for every (c, tile): (n, n, C*P) -> (n*n, G', Cg, P)
    V = transform(BT, input_tiles(x, padding, w)).reshape(n * n, G_, Cg, P)
    # The element-wise stage, summed over channels: one batched product per tile element.
    M = xp.matmul(U, V).reshape(n, n, F * P)                  # (n*n, G', F/G', P)
    cache = (x, padding, groups, w, U, V if keep_tiles else None)
    del V
    # Y = A^T M A: (m, m, F, TH, TW, N); tile element (i, j) is pixel (m*th + i, m*tw + j).
    Y = transform(AT, M).reshape(m, m, F, TH, TW, N)
    out = xp.empty((N, F, OH, OW), dtype=x.dtype)
    for i in range(m):
        for j in range(m):
            # Pixels (m*th + i, m*tw + j) are the strided slice out[:, :, i::m, j::m]; a last
            # row or column of tiles that overhangs the output is cut off.  Both views put f
            # last: NumPy then copies in runs of F numbers, not of m (4x faster).
            rows, cols = len(range(i, OH, m)), len(range(j, OW, m))
            xp.add(Y[i, j, :, :rows, :cols].transpose(3, 1, 2, 0), bias,
                   out=out[:, :, i::m, j::m].transpose(0, 2, 3, 1))
    return out, cache


def winograd_conv2d_backward(dout, cache, input_grad=True):
    """dout (N, F, OH, OW) -> (dx (N, C, H, W) or None, dW (F, C/groups, r, r), db (F,))."""
    x, padding, groups, w, U, V = cache
    x_shape = x.shape
    xp = get_array_module(dout)
    N, C, H, W, OH, OW, TH, TW = _sizes(x_shape, padding, w)
    _, G_, Fg, Cg = U.shape
    F, n, m = Fg * G_, w.m + w.r - 1, w.m
    P = TH * TW * N
    A, B = (_matrix(xp, a, dout.dtype, transpose=True) for a in (w.AT, w.BT))
    G = _matrix(xp, w.G, dout.dtype)
    db = dout.sum(axis=(0, 2, 3))
    # dY in the tile layout (m, m, F, TH, TW, N): forward's scatter, reversed.  Outputs of
    # overhanging tiles were cut off: their gradient is 0.
    overhang = (m * TH, m * TW) != (OH, OW)
    dY = (xp.zeros if overhang else xp.empty)((m, m, F, TH, TW, N), dtype=dout.dtype)
    for i in range(m):
        for j in range(m):
            rows, cols = len(range(i, OH, m)), len(range(j, OW, m))
            dY[i, j, :, :rows, :cols] = dout[:, :, i::m, j::m].transpose(1, 2, 3, 0)
    dM = transform(A, dY.reshape(m, m, F * P)).reshape(n * n, G_, Fg, P)   # A dY A^T
    if V is None:                                            # rebuilt, as forward made it
        V = transform(_matrix(xp, w.BT, x.dtype), input_tiles(x, padding, w))
        V = V.reshape(n * n, G_, Cg, P)
    # dU = dM @ V^T and dV = U^T @ dM, one 2-D product per tile element and group: BLAS
    # and cuBLAS read the transposed operand in place (a 4-D matmul would make CuPy copy it).
    dU = xp.empty((n * n, G_, Fg, Cg), dtype=dout.dtype)
    for k in range(n * n):
        for g in range(G_):
            xp.matmul(dM[k, g], V[k, g].T, out=dU[k, g])
    del V
    # dW = G^T dU G for every (f, c), i.e. kron(G)^T applied to dU: (F*Cg, r*r) directly
    dW = xp.matmul(dU.reshape(n * n, F * Cg).T, kron(G)).reshape(F, Cg, w.r, w.r)
    if not input_grad:
        return None, dW, db
    dV = xp.empty((n * n, G_, Cg, P), dtype=dout.dtype)
    for k in range(n * n):
        for g in range(G_):
            xp.matmul(U[k, g].T, dM[k, g], out=dV[k, g])
    del dM
    dd = transform(B, dV.reshape(n, n, C * P))               # B dV B^T: every tile's gradient
    return add_tiles(dd, x_shape, padding, w), dW, db


def multiplications(input_shape, out_channels, padding=1, groups=1, batch=1, w=F2x2_3x3):
    """Multiplications of one forward pass over ``batch`` images, counted as this code does them.

    ``input_shape`` (C, H, W).  Returns a dict:

    * ``direct``: what im2col's product does, F * C/groups * r^2 per output pixel;
    * ``elementwise``: the batched products, n^2 per (f, c, tile), i.e. per m x m
      outputs: 16 for 4 outputs of F(2x2, 3x3) against 4 * 9 = 36 (2.25x fewer);
    * ``input_transform``: (n^2 x n^2) @ (n^2,) per (c, tile) (see ``transform``);
    * ``output_transform``: (m^2 x n^2) @ (n^2,) per (f, tile);
    * ``filter_transform``: (n^2 x r^2) @ (r^2,) per (f, c), once per batch;
    * ``winograd``: the sum of the four.

    Tiles that overhang an odd-sized output count in full: they are computed.
    The transforms' matrices hold mostly 0 and +-1, so a hand-written transform
    needs only additions; a dense product multiplies anyway, and that is counted.
    """
    C, H, W = input_shape
    F, Cg = out_channels, C // groups
    _, _, _, _, OH, OW, TH, TW = _sizes((1, C, H, W), padding, w)
    m, r = w.m, w.r
    n = m + r - 1
    tiles = TH * TW * batch
    counts = {"direct": F * Cg * r * r * OH * OW * batch,
              "elementwise": n * n * F * Cg * tiles,
              "input_transform": n ** 4 * C * tiles,
              "output_transform": m * m * n * n * F * tiles,
              "filter_transform": n * n * r * r * F * Cg}
    counts["winograd"] = sum(v for k, v in counts.items() if k != "direct")
    return counts
