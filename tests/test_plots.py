"""Plots: the kernel grid's layout and scaling, and every plot writes a PNG."""
import numpy as np
from PIL import Image

from tinyalexnet import plots


def test_kernel_grid_tiles_each_kernel_scaled_on_its_own():
    w = np.zeros((5, 3, 2, 2))
    w[0, 0] = [[0, 1], [2, 3]]           # kernel 0: red channel ramps 0..3, others 0
    w[4] = -7.0                          # a constant kernel
    grid = plots.kernel_grid(w, columns=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)      # 2 rows x 3 columns of 2x2 + borders
    assert np.allclose(grid[1:3, 1:3, 0], [[0, 1 / 3], [2 / 3, 1]])
    assert np.allclose(grid[1:3, 1:3, 1:], 0)
    assert np.allclose(grid[4:6, 4:6], 0)                # kernel 4 (row 1, col 1): constant -> 0
    assert np.all(grid[0] == 1) and np.all(grid[:, 0] == 1)   # white borders


def test_kernels_of_other_than_three_channels_show_their_channel_mean_in_grey():
    ramp = np.arange(4.0).reshape(2, 2)
    w = np.stack([np.stack([ramp, 8 - ramp]),             # mean 4 everywhere: constant
                  np.stack([ramp, ramp])])                # mean = the ramp
    grid = plots.kernel_grid(w, columns=2, pad=1)
    assert np.allclose(grid[1:3, 1:3], 0)
    assert np.allclose(grid[1:3, 4:6, 0], ramp / 3)
    assert np.allclose(grid[1:3, 4:6, 0], grid[1:3, 4:6, 2])   # grey: R = G = B


def test_every_plot_writes_a_png(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 10, "val_loss": 1.2 / e,
                "val_top1_error": 0.4 - e / 20, "lr": 0.01 / 10 ** (e // 3)} for e in (1, 2, 3)]
    plots.plot_history(history, tmp_path / "h.png")
    matrix = np.array([[5, 1], [2, 7]])
    plots.plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "c.png")
    plots.plot_kernels(np.random.default_rng(0).standard_normal((96, 3, 11, 11)),
                       tmp_path / "k.png")
    for name in ("h.png", "c.png", "k.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100
