"""Prefetching reads batch k+1 while batch k trains, and changes nothing else."""
import threading

import numpy as np
import pytest

from tinyalexnet.datasets import ArrayDataset, iterate_batches
from tinyalexnet.datasets.prefetch import prefetch
from tinyalexnet.errors import DataError


class Recorder(ArrayDataset):
    """An in-memory data set that records which thread read which batch."""

    def __init__(self, n=10, fail_at=None):
        rng = np.random.default_rng(0)
        super().__init__(rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8),
                         rng.integers(0, 3, n), ["a", "b", "c"])
        self.reads, self.fail_at = [], fail_at
        self.started = {}                       # batch's first index -> Event

    def get_batch(self, indices):
        first = int(indices[0])
        self.reads.append((first, threading.get_ident()))
        self.started.setdefault(first, threading.Event()).set()
        if self.fail_at is not None and first == self.fail_at:
            raise DataError(f"image {first}: cannot decode")
        return super().get_batch(indices)


def _plain(ds, batch, seed=0, epoch=0, start=0):
    return [(s, i, ds.get_batch(i)) for s, i in iterate_batches(ds, batch, seed, epoch, start=start)]


def test_same_batches_in_the_same_order():
    ds = Recorder(n=23)
    want = _plain(ds, 4, seed=3, epoch=1, start=2)
    got = list(prefetch(ds, iterate_batches(ds, 4, 3, 1, start=2)))
    assert [(s, list(i)) for s, i, _ in got] == [(s, list(i)) for s, i, _ in want]
    for (_, _, (x, y)), (_, _, (wx, wy)) in zip(got, want):
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, wy)


def test_the_next_batch_is_read_in_another_thread_while_this_one_is_used():
    ds = Recorder(n=12)
    order = list(iterate_batches(ds, 4, shuffle=False))
    seen = []
    for step, indices, _ in prefetch(ds, iter(order)):
        if step + 1 < len(order):
            # while the loop holds batch `step`, the worker starts on batch step + 1 by itself
            nxt = int(order[step + 1][1][0])
            assert ds.started.setdefault(nxt, threading.Event()).wait(timeout=10), \
                f"batch {step + 1} was not read ahead"
        seen.append(step)
    assert seen == [0, 1, 2]
    assert {t for _, t in ds.reads} == {ds.reads[0][1]} != {threading.get_ident()}


def test_a_read_error_is_raised_at_its_own_step():
    ds = Recorder(n=12, fail_at=8)
    steps = []
    with pytest.raises(DataError, match="image 8"):
        for step, _, _ in prefetch(ds, iterate_batches(ds, 4, shuffle=False)):
            steps.append(step)
    assert steps == [0, 1]


def test_stopping_early_leaves_no_thread_behind():
    ds = Recorder(n=40)
    before = threading.active_count()
    batches = prefetch(ds, iterate_batches(ds, 4, shuffle=False))
    next(batches)
    batches.close()
    assert threading.active_count() == before
    assert len(ds.reads) <= 2            # at most one batch read beyond the one handed out


def test_disabled_reads_in_turn_in_this_thread():
    ds = Recorder(n=8)
    assert [s for s, _, _ in prefetch(ds, iterate_batches(ds, 4), enabled=False)] == [0, 1]
    assert {t for _, t in ds.reads} == {threading.get_ident()}


def _train(tmp_path, prefetching, dataset_type=ArrayDataset):
    from tinyalexnet.config import make_config
    from tinyalexnet.train import Trainer
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (96, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 4, 96)
    data = [dataset_type(images, labels, list("abcd")) for _ in range(3)]
    t = Trainer(make_config(epochs=1, batch_size=16, augment=True), tmp_path, datasets=data,
                progress=False, log=None)
    t.prefetch = prefetching
    t.fit()
    return t.model.state_dict()


def test_training_is_identical_with_and_without_prefetching(tmp_path):
    on = _train(tmp_path / "on", True)
    off = _train(tmp_path / "off", False)
    for name in on:
        assert np.array_equal(on[name], off[name]), name


def test_the_trainer_reads_every_training_batch_in_the_worker(tmp_path):
    class Threads(ArrayDataset):
        names = []

        def get_batch(self, indices):
            Threads.names.append(threading.current_thread().name)
            return super().get_batch(indices)

    _train(tmp_path, True, Threads)
    worker = [n for n in Threads.names if n.startswith("tinyalexnet-prefetch")]
    assert len(worker) == 96 // 16                # one epoch of 6 steps, all read ahead
