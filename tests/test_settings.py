"""One range per setting, the same at every door: config, layer, optimizer, checkpoint.

The expectations are written out here by hand (what each value should do), and
every door that takes the setting is asked; before the ranges were declared in
one place, the config refused a learning rate of infinity that SGD took, and
weight decay 1.0 was refused by one and taken by three.
"""
import dataclasses
import json

import numpy as np
import pytest

from tinyalexnet import checkpoint
from tinyalexnet.config import TrainConfig, make_config
from tinyalexnet.errors import CheckpointError, ConfigError, TinyAlexNetError
from tinyalexnet.layers import Dropout, Linear, LocalResponseNorm, Sequential
from tinyalexnet.optim import SGD, Adam, ReduceLROnPlateau, StepLR
from tinyalexnet.settings import RANGES, check_setting

INF, NAN = float("inf"), float("nan")

# (setting, value, allowed?), decided here from what each number means.
CASES = [
    ("lr", 1e6, True), ("lr", 1e-9, True), ("lr", 0.0, False), ("lr", -0.1, False),
    ("lr", INF, False), ("lr", NAN, False), ("lr", True, False), ("lr", "0.1", False),
    ("momentum", 0.0, True), ("momentum", 0.99, True), ("momentum", 1.0, False),
    ("momentum", -0.1, False),
    ("weight_decay", 0.0, True), ("weight_decay", 0.0005, True), ("weight_decay", 0.5, True),
    ("weight_decay", 1.0, False), ("weight_decay", 5.0, False), ("weight_decay", -1e-4, False),
    ("weight_decay", INF, False), ("weight_decay", False, False),
]


def _sgd(name, value):
    return SGD(Sequential(Linear(2, 2, rng=0)), **{name: value})


def _checkpoint_with(tmp_path, name, value):
    """A checkpoint of an SGD run whose optimizer number ``name`` reads ``value``."""
    model = Sequential(Linear(2, 2, rng=0))
    model.input_shape = (2,)
    path = tmp_path / "c.npz"
    meta = dict(checkpoint.model_meta(model, "alexnet_small"), num_classes=2, in_channels=2,
                input_shape=[2, 1, 1])
    checkpoint.save(path, model, meta, SGD(model, lr=0.1, momentum=0.5, weight_decay=0.1))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    saved = json.loads(str(arrays["meta"]))
    saved["optimizer"]["hyper"][name] = value
    arrays["meta"] = np.array(json.dumps(saved))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name, value, allowed", CASES, ids=lambda v: repr(v))
def test_every_door_agrees_on_a_setting(tmp_path, name, value, allowed):
    doors = {}
    for door, take in [("config", lambda: make_config(optimizer="sgd", **{name: value})),
                       ("SGD", lambda: _sgd(name, value))]:
        try:
            take()
            doors[door] = True
        except ConfigError as err:
            assert name.replace("_", "-") in str(err) or name in str(err)
            doors[door] = False
    if isinstance(value, float):                 # a checkpoint's JSON holds numbers only
        try:
            checkpoint.load(_checkpoint_with(tmp_path, name, value))
            doors["checkpoint"] = True
        except CheckpointError as err:
            assert name in str(err) and "\n" not in str(err)
            doors["checkpoint"] = False
    assert doors == {door: allowed for door in doors}


@pytest.mark.parametrize("value, allowed", [(0.9, True), (0.0, True), (1.0, False), (INF, False)])
def test_adams_weight_decay_and_betas_keep_the_same_ranges(value, allowed):
    model = Sequential(Linear(2, 2, rng=0))
    for make in (lambda: Adam(model, betas=(value, 0.999)), lambda: Adam(model, betas=(0.9, value)),
                 lambda: Adam(model, weight_decay=value)):
        if allowed:
            make()
        else:
            with pytest.raises(ConfigError, match="Adam: .* must be a number in \\[0, 1\\)"):
                make()


def test_the_rules_read_as_ranges():
    assert RANGES["weight_decay"].rule == "a number in [0, 1)"
    assert RANGES["lr"].rule == "a number > 0"
    assert RANGES["gamma"].rule == "a number in (0, 1]"
    assert RANGES["size"].rule == "an odd integer >= 1"
    assert RANGES["max_reductions"].rule == "an integer >= 0 (or None)"


def test_a_checked_setting_comes_back_as_a_plain_python_number():
    p = check_setting("Dropout", "p", np.float32(0.25))
    size = check_setting("LocalResponseNorm", "size", np.int64(5))
    assert type(p) is float and p == 0.25 and type(size) is int and size == 5
    assert type(Dropout(np.float64(0.5)).p) is float
    assert type(LocalResponseNorm(np.int32(3)).size) is int


def test_schedules_read_the_same_ranges():
    opt = _sgd("lr", 0.1)
    with pytest.raises(ConfigError, match="StepLR: step_size must be an integer >= 1, got 2.0"):
        StepLR(opt, 2.0)
    with pytest.raises(ConfigError, match="ReduceLROnPlateau: patience .* got True"):
        ReduceLROnPlateau(opt, patience=True)
    assert ReduceLROnPlateau(opt, max_reductions=None).max_reductions is None


def test_every_number_of_a_run_has_a_declared_range():
    """A new TrainConfig number without a range would go unchecked."""
    numbers = [f.name for f in dataclasses.fields(TrainConfig)
               if (isinstance(f.default, (int, float)) and not isinstance(f.default, bool))
               or f.name == "limit"]
    assert set(numbers) <= set(RANGES), sorted(set(numbers) - set(RANGES))
    for name in numbers:
        with pytest.raises(TinyAlexNetError, match=f"invalid --{name.replace('_', '-')} "):
            make_config(**{name: -1})


def test_a_setting_without_a_range_names_where_to_declare_it():
    with pytest.raises(LookupError, match="settings.py"):
        check_setting("GroupNorm", "num_groups", 3)


def test_a_dropout_seed_is_a_seed_like_the_runs():
    with pytest.raises(ConfigError, match="Dropout: seed must be an integer from 0 to 2"):
        Dropout(0.5, seed=-1)


def test_a_setting_declared_for_one_class_wins_there_only():
    """BatchNorm's momentum (the weight of a new batch, up to 1) is not SGD's (below 1)."""
    assert check_setting("BatchNorm2d", "momentum", 1.0) == 1.0
    with pytest.raises(ConfigError, match="SGD: momentum must be a number in \\[0, 1\\)"):
        check_setting("SGD", "momentum", 1.0)
    with pytest.raises(ConfigError, match="BatchNorm2d: momentum must be"):
        check_setting("BatchNorm2d", "momentum", 1.5)
