"""Data sets: what they are (base.py) and where they come from (one file per source)."""
from .base import ArrayDataset, batch_order, iterate_batches

__all__ = ["ArrayDataset", "batch_order", "iterate_batches"]
