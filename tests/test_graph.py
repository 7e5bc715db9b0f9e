"""The training step replayed as CUDA graphs (tinyalexnet/graph.py), on the strict CuPy
stand-in, whose capture records each operation over its buffers and whose replays
re-run the recorded calls without the Python step (tests/strict_cupy.py): the bugs a
graph has on a GPU happen here too.

Every test's name contains "graph": ``pytest -k graph`` runs them.

The reference is the same Trainer stepping eagerly, with the optimizer's fused
kernel (graph mode runs it: it reads lr and t from the device): N replays must
leave the weights, the optimizer's state and the running numbers equal bit for
bit, in float64, across a learning-rate change, with dropout, Adam and the paper's
SGD rule.
"""
from types import SimpleNamespace

import numpy as np
import pytest

import kernel_references
from tinyalexnet import graph
from tinyalexnet.config import make_config
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.metrics import RunningMeter
from tinyalexnet.parallel import DataParallel
from tinyalexnet.train import Trainer
from tinyalexnet.transforms import Pipeline


def _images(n, side=32, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, 3, side, side)).astype(np.uint8),
                        rng.integers(0, classes, n), [f"c{k}" for k in range(classes)],
                        name="rgb")


class Float64Pipeline(Pipeline):
    """The pipeline's float32 input as float64 (the tests compare in float64)."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs).astype("float64")

    def from_staged(self, *args, **kwargs):
        return super().from_staged(*args, **kwargs).astype("float64")


def make_trainer(tmp_path, name, cuda_graph, optimizer="adam", batch=8, n=24, model="alexnet_small",
                 lines=None, float64=True, **options):
    data = _images(n)
    pipe = Pipeline.for_dataset(data, (3, 32, 32), augment=options.get("augment", False),
                                lighting=options.get("lighting", False))
    if float64:
        pipe.__class__ = Float64Pipeline
    rule = dict(momentum=0.9, weight_decay=5e-4) if optimizer == "sgd" else {}
    config = make_config(model=model, batch_size=batch, optimizer=optimizer, backend="cupy",
                         lr=0.01 if optimizer == "sgd" else 1e-3, cuda_graph=cuda_graph,
                         **{"epochs": 1, **rule, **options})
    log = (lambda line: lines.append(line)) if lines is not None else None
    trainer = Trainer(config, tmp_path / name, datasets=(data, data, data), pipeline=pipe,
                      progress=False, log=log)
    if float64:
        trainer.model.to(dtype="float64")
    trainer.optimizer.fused = True          # the eager reference runs the same update kernel
    if trainer.graph is not None:
        trainer.graph.fused_before = True   # (and so does a trainer that gave the graph up)
    trainer.meter = RunningMeter(trainer.xp)
    return trainer


def run_steps(trainer, steps, lr_changes=()):
    """``steps`` training steps on the batches 0, 1, 2, ... (wrapping around), the learning
    rate set at the steps of ``lr_changes`` ({step: lr}) as a schedule would set it."""
    data, B = trainer.train_set, trainer.config.batch_size
    for step in range(steps):
        if step in dict(lr_changes):
            trainer.optimizer.lr = dict(lr_changes)[step]
        start = (step * B) % len(data)
        images, labels = data.get_batch(np.arange(start, start + B) % len(data))
        trainer._train_step(step, images, labels)


def state_of(standin, trainer):
    """Every weight, the optimizer's state, the counters and the running numbers (host)."""
    out = {f"param {name}": standin.host_arrays(p).copy()
           for name, p, _ in trainer.model.named_parameters()}
    for slot, store in trainer.optimizer.state.items():
        for name, a in store.items():
            out[f"{slot} {name}"] = standin.host_arrays(a).copy()
    out["steps"] = trainer.optimizer.steps
    out["dropout calls"] = [getattr(m, "calls", None) for m in trainer.model.layers.values()]
    out["meter"] = trainer.meter.read()
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (
                f"{key}: graph and eager differ, max |diff| "
                f"{np.max(np.abs(a[key].astype(float) - b[key].astype(float)))}")
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("optimizer, augment", [("adam", False), ("sgd", False), ("sgd", True)],
                         ids=["adam", "sgd", "sgd augmented"])
def test_graph_replays_equal_eager_steps_bit_for_bit(standin, tmp_path, optimizer, augment):
    """alexnet_small (two Dropout layers), float64: 6 steps, the learning rate divided by
    ten after step 3 (as a schedule does between epochs): the graph trainer (1 warm-up
    step, the capture, replays) ends exactly where the eager one does; with the paper's
    augmentation too (random crops, reflections, PCA lighting: drawn on the host each
    step from the step's generator, copied into the graph's input buffers)."""
    kernel_references.register(standin)
    lines = []
    aug = dict(augment=True, lighting=True) if augment else {}
    eager = make_trainer(tmp_path, "eager", False, optimizer, **aug)
    replayed = make_trainer(tmp_path, "graph", True, optimizer, lines=lines, **aug)
    changes = {3: eager.optimizer.lr / 10}
    run_steps(eager, 6, changes)
    run_steps(replayed, 6, changes)
    assert replayed.graph.graph is not None, lines         # it did capture
    assert any("captured" in line for line in lines), lines
    assert_same(state_of(standin, replayed), state_of(standin, eager))
    assert state_of(standin, replayed)["steps"] == 6


def test_graph_replay_does_not_run_the_python_step(standin, tmp_path, monkeypatch):
    """After the capture the model's Python forward is never called again (a replay is
    the recorded calls), and a replay reads nothing back from the device."""
    kernel_references.register(standin)
    trainer = make_trainer(tmp_path, "graph", True)
    run_steps(trainer, 2)                                 # warm-up, capture + first replay
    calls = []
    monkeypatch.setattr(trainer.model, "forward", lambda x: calls.append(x))
    with standin.count_launches() as launches:
        run_steps(trainer, 2)
    assert calls == []
    assert launches.reads.count == 0, launches.reads
    assert launches.names["graph launch"] == 2 * trainer.graph.graph.graphs


def test_graph_dropout_masks_change_between_replays(standin, tmp_path):
    """The mask counter lives on the device and the graph advances it: two replays draw
    two different masks, those the eager steps draw."""
    kernel_references.register(standin)
    trainer = make_trainer(tmp_path, "graph", True)
    drop = [m for m in trainer.model.layers.values() if type(m).__name__ == "Dropout"][0]
    eager = make_trainer(tmp_path, "eager", False)
    eager_drop = eager.model.layers[drop.name]
    masks, eager_masks = [], []
    for step in range(4):          # warm-up, capture + replay, replay, replay
        run_steps_from(trainer, step)
        run_steps_from(eager, step)
        masks.append(standin.host_arrays(_keep(drop)).copy())
        eager_masks.append(standin.host_arrays(_keep(eager_drop)).copy())
    assert not np.array_equal(masks[2], masks[3])        # two replays, two masks
    for got, want in zip(masks, eager_masks):
        assert np.array_equal(got, want)


def _keep(layer):
    """The mask a Dropout layer's last forward kept (its saved keep array)."""
    saved = layer._cache
    return [a for a in saved if hasattr(a, "dtype") and str(a.dtype) == "bool"][0]


def run_steps_from(trainer, step):
    data, B = trainer.train_set, trainer.config.batch_size
    images, labels = data.get_batch(np.arange(B) + (step * B) % len(data))
    trainer._train_step(step, images, labels)


def test_graph_falls_back_with_one_line(standin, tmp_path):
    """A step that cannot be captured runs eagerly, and the log says why in one line:
    a readable layer (its products are not cut out of the capture), augmentation, NumPy."""
    kernel_references.register(standin)
    lines = []
    trainer = make_trainer(tmp_path, "readable", True, lines=lines)
    trainer.model.set_fast(False)
    run_steps(trainer, 3)
    said = [line for line in lines if line.startswith("cuda graph")]
    assert len(said) == 1 and "not used" in said[0] and "\n" not in said[0], said
    assert trainer.optimizer.steps == 3

    lines.clear()
    small = _images(16, side=16)                    # 16 -> 32: the pipeline resizes first
    config = make_config(model="alexnet_small", batch_size=8, backend="cupy", cuda_graph=True)
    Trainer(config, tmp_path / "resized", datasets=(small, small, small), progress=False,
            log=lines.append)
    assert [line for line in lines if "resizes" in line and "not used" in line], lines


def test_graph_is_not_used_on_several_processes(standin, tmp_path):
    """Data parallelism and the two towers wait on other processes inside the step (the
    all-reduce, the crossings): the step stays eager there, and the log says so once."""
    kernel_references.register(standin)
    lines = []
    trainer = make_trainer(tmp_path, "ranks", False, lines=lines)
    trainer.parallel = DataParallel(SimpleNamespace(rank=0, size=2))
    trainer.log = lines.append
    step = graph.GraphStep(trainer)
    assert step.failed is not None and "several processes" in step.failed
    said = [line for line in lines if line.startswith("cuda graph")]
    assert len(said) == 1 and "not used" in said[0], said
    assert step.run(None, None, None, 0) is False       # the trainer's eager step runs


def test_graph_capture_that_fails_falls_back(standin, tmp_path, monkeypatch):
    """A host read inside the step raises during capture, as CUDA does; the trainer gives
    the graph up (one line naming the error) and the step runs eagerly, counted once."""
    kernel_references.register(standin)
    lines = []
    trainer = make_trainer(tmp_path, "graph", True, lines=lines)
    real = trainer.loss_fn.forward

    def reads_back(logits, labels, **kw):
        loss = real(logits, labels, **kw)
        float(loss)                                      # a host read inside the step
        return loss
    monkeypatch.setattr(trainer.loss_fn, "forward", reads_back)
    eager = make_trainer(tmp_path, "eager", False)
    run_steps(trainer, 3)
    run_steps(eager, 3)
    said = [line for line in lines if line.startswith("cuda graph")]
    assert len(said) == 1 and "D2H" in said[0], said
    assert_same(state_of(standin, trainer), state_of(standin, eager))


def test_graph_matmul_is_xp_matmul_outside_a_capture(standin):
    a = standin.cupy.asarray(np.arange(6.0).reshape(2, 3))
    got = standin.host_arrays(graph.matmul(a, a.T))
    x = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(got, x @ x.T)


def test_graph_option_reaches_the_trainer_and_numpy_says_why_not(tmp_path):
    """``train --cuda-graph`` sets ``config.cuda_graph``; on NumPy the trainer trains eagerly
    and says so in one line."""
    import argparse
    from tinyalexnet import cli
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    assert parser.parse_args(["--cuda-graph"]).cuda_graph is True
    assert parser.parse_args([]).cuda_graph is None            # the config's default: off
    lines = []
    data = _images(16)
    config = make_config(model="alexnet_small", batch_size=8, backend="numpy", cuda_graph=True)
    trainer = Trainer(config, tmp_path / "numpy", datasets=(data, data, data), progress=False,
                      log=lines.append)
    assert lines == ["cuda graph: not used (CUDA graphs need the cupy backend); "
                     "training runs eagerly"]
    assert trainer.graph.failed and not make_config().cuda_graph


def test_graph_fit_two_epochs_equals_eager(standin, tmp_path):
    """Trainer.fit, 2 epochs of 3 steps (the last batch of each short: run eagerly between
    replays), the running numbers read every 2 steps (the graph's row number put back to 0
    after each read), a new meter each epoch, the schedule dividing lr by 10 after epoch 1:
    the history's numbers and every weight equal the eager run's, bit for bit."""
    kernel_references.register(standin)
    runs = {}
    for name, cuda_graph in (("eager", False), ("graph", True)):
        lines = []
        t = make_trainer(tmp_path, name, cuda_graph, n=20, lines=lines, epochs=2,
                         schedule="step", step_size=1, log_every=2)
        t.fit()
        runs[name] = (t, lines)
    (eager, _), (replayed, lines) = runs["eager"], runs["graph"]
    assert any("captured" in line for line in lines) and replayed.graph.failed is None, lines
    keys = ("train_loss", "train_acc", "val_loss", "val_top1_error", "lr")
    assert [[h[k] for k in keys] for h in replayed.history] == \
        [[h[k] for k in keys] for h in eager.history]
    assert replayed.history[1]["lr"] == pytest.approx(1e-4)     # the schedule did change it
    replayed.meter = eager.meter = RunningMeter(eager.xp)
    assert_same(state_of(standin, replayed), state_of(standin, eager))
    assert replayed.optimizer.steps == 6


def test_graph_run_resumed_from_its_checkpoint_ends_as_one_run(standin, tmp_path):
    """Graph mode's counters live on the device and their host mirrors go into the
    checkpoint: a run stopped after epoch 1 and resumed (a new capture) ends with the weights
    of a run that was never stopped, bit for bit."""
    kernel_references.register(standin)
    whole = make_trainer(tmp_path, "whole", True, n=20, float64=False, epochs=2)
    whole.fit()
    first = make_trainer(tmp_path, "part", True, n=20, float64=False, epochs=1)
    first.fit()
    data = first.train_set
    resumed = Trainer.resume(tmp_path / "part", overrides={"epochs": 2},
                             datasets=(data, data, data), progress=False, log=None)
    resumed.fit()
    assert resumed.graph.graph is not None and resumed.graph.failed is None
    for (name, p, _), (_, q, _) in zip(whole.model.named_parameters(),
                                       resumed.model.named_parameters()):
        assert np.array_equal(standin.host_arrays(p), standin.host_arrays(q)), name
    assert resumed.optimizer.steps == whole.optimizer.steps == 6
