"""The benchmark command runs end to end and prints what it promises.

No timing is asserted (speed lives in the command's output, see BENCHMARKS.md):
only that the report has its fields, the numbers are positive, and, where
PyTorch is installed, that the PyTorch twin computes the same thing.
"""
import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tinyalexnet import bench, bench_conv, bench_measure, bench_report, machine
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.models import get_model
from tinyalexnet.torch_twin import check_outputs
from tinyalexnet.config import make_config
from tinyalexnet.train import Trainer

TINY = ["--model", "alexnet_small", "--batch-size", "2", "--steps", "1", "--warmup", "1",
        "--layer-steps", "1"]


def _args(argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def _number(pattern, text):
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    return float(match.group(1))


def test_bench_prints_speed_memory_and_layers(capsys, tmp_path):
    out_json = tmp_path / "result.json"
    assert bench.run(_args(TINY + ["--json", str(out_json)])) == 0
    text = capsys.readouterr().out
    assert _number(r"^images/s\s+([\d.]+)", text) > 0
    assert _number(r"^step time \(median\)\s+([\d.]+) ms", text) > 0
    assert _number(r"^peak memory \(RSS\)\s+([\d.]+) MiB", text) > 0
    assert "NumPy BLAS:" in text
    # one row per layer of the model, plus the loss and the update
    model = get_model("alexnet_small")
    for name in list(model.layers) + ["loss", "sgd update"]:
        assert re.search(rf"^{re.escape(name)}\s+\S+\s+[\d.]+\s+[\d.]+\s+[\d.]+%", text,
                         re.MULTILINE), f"no timing row for {name}"
    result = json.loads(out_json.read_text())
    assert result["images_per_s"]["tinyalexnet"] > 0
    assert len(result["layers"]) == len(model.layers) + 2


def test_every_timing_says_how_busy_the_cpus_were_in_one_line(capsys, monkeypatch):
    """bench (the step table, the layer table) and bench_conv (the layers, the whole step)
    print machine.load_line, whose warning starts at 5%."""
    assert "too busy" not in machine.load_line(0.049) and "too busy" in machine.load_line(0.05)
    monkeypatch.setattr(machine.OtherLoad, "stop", lambda self: 0.3)
    assert bench.run(_args(TINY + ["--no-memory"])) == 0
    line = machine.load_line(0.3)
    assert capsys.readouterr().out.count(line + "\n") == 2
    conv_args = argparse.ArgumentParser()
    bench_conv.add_arguments(conv_args)
    conv_args = conv_args.parse_args(["--model", "alexnet_small", "--batch-size", "1",
                                      "--repeats", "1"])
    assert bench_conv.run(conv_args) == 0
    assert capsys.readouterr().out.count(line + "\n") == 2


def test_the_report_of_two_frameworks_when_one_memory_is_unreadable(capsys, tmp_path):
    """Records in, table and JSON out: medians, images/s and their ratio worked out by hand;
    a peak memory that could not be read is "n/a", with no memory ratio."""
    report = bench_report.Report(_args(TINY + ["--batch-size", "8", "--compare", "torch"]))
    report.setup(bench_measure.Setup(device="CPU test", blas="NumPy BLAS: test", convs=5,
                                     cached=0, winograd=0, check_finite=True, tf32="n/a",
                                     torch="PyTorch 0.0, 1 threads"))
    times = bench_measure.StepTimes({"tinyalexnet": [0.1, 0.3, 0.2], "PyTorch": [0.4, 0.5, 0.3]},
                                    other_load=None, batch_size=8)
    report.speed(times, bench_measure.Memory("RSS", {"tinyalexnet": 3 * 2**20, "PyTorch": None}))
    report.write_json(tmp_path / "r.json")
    text = capsys.readouterr().out
    assert re.search(r"^step time \(median\)\s+200\.0 ms\s+400\.0 ms$", text, re.M), text
    assert re.search(r"^images/s\s+40\.0\s+20\.0\s+2\.00$", text, re.M), text
    assert re.search(r"^peak memory \(RSS\)\s+3 MiB\s+n/a$", text, re.M), text
    assert "other programs kept" not in text                  # the load was unknown
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images_per_s"] == {"tinyalexnet": 40.0, "PyTorch": 20.0}
    assert result["ratio_images_per_s"] == 2.0 and "ratio_peak_memory" not in result
    assert result["peak_memory_bytes"] == {"tinyalexnet": 3 * 2**20, "PyTorch": None}
    assert result["torch"] == "PyTorch 0.0, 1 threads" and result["batch_size"] == 8


def test_bench_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "tinyalexnet.bench"] + TINY + ["--no-memory"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "images/s" in done.stdout


def test_bench_rejects_bad_options_in_one_line():
    done = subprocess.run([sys.executable, "-m", "tinyalexnet.bench", "--steps", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--steps" in lines[0]


def test_bench_compare_without_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch now raises ImportError
    with pytest.raises(bench.TinyAlexNetError, match="needs PyTorch"):
        bench.run(_args(TINY + ["--compare", "torch", "--no-memory"]))


def test_bench_compares_with_torch(capsys):
    pytest.importorskip("torch")
    assert bench.run(_args(TINY + ["--compare", "torch"])) == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+agree$", text, re.MULTILINE), text
    # float64 gradients of the two frameworks agree far below the stated tolerance
    assert _number(r"float64 gradients: worst ([\d.e+-]+)", text) <= 1e-8
    assert _number(r"^images/s\s+[\d.]+\s+[\d.]+\s+([\d.]+)$", text) > 0
    assert _number(r"^peak memory \(RSS\)\s+[\d.]+ MiB\s+[\d.]+ MiB\s+([\d.]+)$", text) > 0


def test_torch_twin_disagrees_when_a_weight_differs():
    """The output check can fail: change one weight and it must say so."""
    torch = pytest.importorskip("torch")
    args = _args(TINY)
    ours = bench.OursRunner(args)
    theirs = bench_measure.torch_runner(args, ours.model, ours.num_classes, threads=1)
    with torch.no_grad():
        theirs.model.conv3.weight[0, 0, 0, 0] += 0.5
    ok, numbers, lines = check_outputs(ours, theirs, "float32")
    assert not ok
    assert "DISAGREE" in lines[-1]


def _isfinite_calls(monkeypatch, argv):
    """How many NaN checks (np.isfinite calls) one timed step of ``bench argv`` makes."""
    calls = []
    real = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda *a, **k: calls.append(1) or real(*a, **k))
    ours = bench.OursRunner(_args(TINY + argv))
    ours.step()
    monkeypatch.setattr(np, "isfinite", real)
    return len(calls), ours


def test_timed_steps_have_the_nan_checks_training_has(monkeypatch, tmp_path):
    """On NumPy a timed step checks every layer's input and the loss's, as a training step
    does (counted through np.isfinite); --check-finite off and on override."""
    count, ours = _isfinite_calls(monkeypatch, [])
    assert count == len(ours.model.layers) + 1
    assert _isfinite_calls(monkeypatch, ["--check-finite", "off"])[0] == 0
    assert _isfinite_calls(monkeypatch, ["--check-finite"])[0] == count     # bare: on
    # ... and it is the Trainer's own setting on this backend, layer for layer
    trained = _trainer_checks(tmp_path, "numpy")
    assert trained == {name: True for name in trained}
    assert _runner_checks("numpy") == trained


def _trainer_checks(tmp_path, backend_name):
    """{layer: check_finite} as a Trainer on ``backend_name`` sets them, and the loss's."""
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (8, 1, 28, 28)).astype(np.uint8),
                        rng.integers(0, 2, 8), ["a", "b"], name="tiny")
    config = make_config(model="alexnet_small", backend=backend_name, epochs=1, batch_size=4)
    trainer = Trainer(config, tmp_path / backend_name, datasets=(data, data, data),
                      progress=False, log=None)
    checks = {name: m.check_finite for name, m in trainer.model.named_modules() if name}
    checks["loss"] = trainer.loss_fn.check_finite
    return checks


def _runner_checks(backend_name):
    ours = bench.OursRunner(_args(TINY + ["--backend", backend_name]))
    checks = {name: m.check_finite for name, m in ours.model.named_modules() if name}
    checks["loss"] = ours.loss.check_finite
    return checks


def test_the_bench_default_is_the_trainers_on_the_gpu_too(standin, tmp_path):
    trained = _trainer_checks(tmp_path, "cupy")
    assert trained == {name: False for name in trained}
    assert _runner_checks("cupy") == trained


def test_an_option_added_later_reaches_the_probe_with_no_code_for_it(monkeypatch):
    """A flag and a choice added to add_arguments (as another conv algorithm would be)."""
    def with_more(parser):
        parser = original(parser)
        parser.add_argument("--new-flag", action="store_true")
        parser.add_argument("--new-choice", choices=["a", "b"], default=None)
        return parser

    original = bench.add_arguments
    monkeypatch.setattr(bench, "add_arguments", with_more)
    args = _args(TINY + ["--new-flag", "--new-choice", "b"])
    probe = _args(bench._probe_argv(args, "ours", None)[2:])
    assert probe.new_flag is True and probe.new_choice == "b" and probe.model == "alexnet_small"


class _Pass:
    """A stand-in framework for check_outputs: fixed logits, loss and gradients."""

    def __init__(self, grads):
        self.x, self.grads = np.zeros((2, 3)), grads

    def eval_pass(self, dtype, n):
        return np.ones((2, 4)), 1.5, self.grads


def test_the_output_check_refuses_a_nan_anywhere():
    grads = {"a.weight": np.ones(3), "b.weight": np.ones(3)}
    assert check_outputs(_Pass(grads), _Pass(dict(grads)), "float32")[0]
    for name in grads:                          # a NaN in either place, first or last
        bad = dict(grads, **{name: np.array([1.0, np.nan, 1.0])})
        ok, numbers, lines = check_outputs(_Pass(grads), _Pass(bad), "float32")
        assert not ok and numbers["grad_worst"] == name and "DISAGREE" in lines[-1]


def test_the_memory_probe_gets_every_option_that_shapes_a_step():
    """Every option of add_arguments but the timing and reporting ones reaches the probe,
    with its value: an option added later (e.g. another conv algorithm) needs no code here."""
    argv = ["--model", "alexnet_small", "--batch-size", "3", "--dtype", "float64",
            "--num-classes", "7", "--cache-cols", "on", "--check-finite", "off", "--seed", "5",
            "--tf32", "on", "--steps", "4", "--warmup", "0", "--layer-steps", "0", "--no-memory",
            "--json", "x.json", "--compare", "torch", "--threads", "9"]
    args = _args(argv)
    probe = _args(bench._probe_argv(args, "torch", threads=2)[2:])      # after "-m module"
    assert probe.memory_probe == "torch" and probe.threads == 2
    given = {a.dest for a in bench.add_arguments(argparse.ArgumentParser())._actions
             if a.option_strings} - {"help"}
    forwarded = given - bench.NOT_FOR_THE_PROBE
    for name in forwarded:
        assert getattr(probe, name) == getattr(args, name), name
    assert forwarded >= {"model", "batch_size", "dtype", "num_classes", "cache_cols",
                         "check_finite", "seed"}
    for name in ("steps", "warmup", "layer_steps", "no_memory", "json", "compare"):
        assert getattr(probe, name) != getattr(args, name), name      # defaults: not timed
    assert bench._probe_argv(_args([]), "ours", None) == ["-m", "tinyalexnet.bench",
                                                          "--memory-probe", "ours"]


def test_tf32_is_not_applicable_on_the_cpu(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    assert bench.run(_args(TINY + ["--tf32", "on", "--no-memory", "--json", str(out_json)])) == 0
    assert "TF32: not applicable on the CPU" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["tf32"] == "n/a"


# ---------------------------------------------------------------------------- on the stand-in
def test_a_timed_step_reads_nothing_back_from_the_device(standin):
    """The timed step (forward, loss, backward, update) never waits for the device: no
    float(), no NaN check, no .item() - on a GPU each would stall the queue mid-step."""
    ours = bench.OursRunner(_args(TINY + ["--backend", "cupy"]))
    ours.step()                                    # warm-up, as the benchmark does
    with standin.count_host_reads() as reads:
        ours.step()
    assert reads.count == 0, reads
    with standin.cupyx.allow_synchronize(False):   # raises DeviceSynchronized on any read
        ours.step()


def test_bench_runs_on_the_standin_with_tf32_pool_memory_and_events(standin, capsys, tmp_path):
    out_json = tmp_path / "r.json"
    assert bench.run(_args(TINY + ["--backend", "cupy", "--tf32", "on", "--json",
                                   str(out_json)])) == 0
    text = capsys.readouterr().out
    assert "device: GPU strict CuPy stand-in" in text and "CuPy 14." in text
    assert "TF32 (as each library reports it): tinyalexnet on" in text
    assert _number(r"^peak memory \(pool\)\s+([\d.]+) MiB", text) >= 0
    assert "memory reserved" in text
    result = json.loads(out_json.read_text())
    assert result["tf32"] == {"tinyalexnet": "on"} and result["backend"] == "cupy"
    assert result["peak_memory_bytes"]["tinyalexnet"] > 0
    assert len(result["layers"]) == len(get_model("alexnet_small").layers) + 2
    assert bench.backend.tf32_enabled()            # what --tf32 on set


def test_tf32_off_overrides_the_environment(standin, monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "1")
    assert bench.run(_args(TINY + ["--backend", "cupy", "--tf32", "off", "--no-memory",
                                   "--layer-steps", "0"])) == 0
    assert not bench.backend.tf32_enabled()
