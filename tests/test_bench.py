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

import pytest

from tinyalexnet import bench
from tinyalexnet.models import get_model

TINY = ["--model", "small", "--batch-size", "2", "--steps", "1", "--warmup", "1",
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
    model = get_model("small")
    for name in list(model.layers) + ["loss", "sgd update"]:
        assert re.search(rf"^{re.escape(name)}\s+\S+\s+[\d.]+\s+[\d.]+\s+[\d.]+%", text,
                         re.MULTILINE), f"no timing row for {name}"
    result = json.loads(out_json.read_text())
    assert result["images_per_s"]["tinyalexnet"] > 0
    assert len(result["layers"]) == len(model.layers) + 2


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
    theirs = bench.TorchRunner(args, ours.model, threads=1)
    with torch.no_grad():
        theirs.model.conv3.weight[0, 0, 0, 0] += 0.5
    ok, numbers, lines = bench.check_outputs(ours, theirs, "float32")
    assert not ok
    assert "DISAGREE" in lines[-1]


def test_to_torch_maps_lrn_alpha_and_groups():
    torch = pytest.importorskip("torch")
    model = get_model("small")
    net = bench.to_torch(model, torch)
    assert net.norm1.alpha == pytest.approx(model["norm1"].alpha * model["norm1"].size)
    assert net.conv2.groups == model["conv2"].groups == 2
    assert torch.equal(net.conv2.weight, torch.from_numpy(model["conv2"].params["weight"]))


def test_timed_steps_read_nothing_back_for_nan_checks(monkeypatch):
    """Each NaN check is a read back from the device (a GPU sync inside the timed step):
    none by default, the loss's included; one per layer and the loss with --check-finite."""
    import numpy as np
    calls = []
    real = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda *a, **k: calls.append(1) or real(*a, **k))
    ours = bench.OursRunner(_args(TINY))
    ours.step()
    assert calls == []
    ours = bench.OursRunner(_args(TINY + ["--check-finite"]))
    ours.step()
    assert len(calls) == len(ours.model.layers) + 1


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
    assert len(result["layers"]) == len(get_model("small").layers) + 2
    assert bench.backend.tf32_enabled()            # what --tf32 on set


def test_tf32_off_overrides_the_environment(standin, monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "1")
    assert bench.run(_args(TINY + ["--backend", "cupy", "--tf32", "off", "--no-memory",
                                   "--layer-steps", "0"])) == 0
    assert not bench.backend.tf32_enabled()
