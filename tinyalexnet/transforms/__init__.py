"""Batch preprocessing and the paper's augmentation, vectorised, on any backend.

Two files:

- ``functional.py``: the steps, one function each (``to_float``, ``pad``,
  ``resize``, ``crop`` with reflections, ``ten_crop``, PCA ``lighting``,
  ``normalize``), each over a whole batch (B, C, H, W) on NumPy or CuPy, and
  ``crop_standardize``, the pipeline's last steps together (one kernel on a GPU);
- ``pipeline.py``: the ``Pipeline`` that fits mean, standard deviation and
  colour PCA to a training set, plans how images reach the model's size (the
  ``PLAN`` table) and runs those steps the same way for training, evaluation
  and prediction; its settings go into checkpoints (``config``/``from_config``).

Everything is importable from here: ``from tinyalexnet import transforms``,
then ``transforms.crop``, ``transforms.Pipeline``, ...
"""
from .functional import (LIGHTING_STD, center_crop, center_crop_padded, center_offsets, crop,
                         crop_index, crop_standardize, lighting, lighting_alpha, lighting_offset,
                         normalize, normalize_constants, pad, random_crop_params, resize,
                         rgb_pca, standardize, standardize_constants, ten_crop, to_float)
from .pipeline import PLAN, Pipeline, channel_stats, paper_canvas, plan, plan_table

__all__ = ["LIGHTING_STD", "center_crop", "center_crop_padded", "center_offsets", "crop",
           "crop_index", "crop_standardize", "lighting", "lighting_alpha", "lighting_offset", "normalize", "normalize_constants",
           "pad", "random_crop_params", "resize", "rgb_pca", "standardize",
           "standardize_constants", "ten_crop", "to_float", "PLAN", "Pipeline", "channel_stats",
           "paper_canvas", "plan", "plan_table"]
