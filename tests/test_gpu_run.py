"""scripts/gpu_run.py, the one prepared GPU run, rehearsed on the CPU.

A GPU is lent to this project rarely and briefly, so the script that spends
those minutes must not fail on its own plumbing: here it runs every step on
NumPy with tiny settings (``--rehearse``), and its parts (time limits, Ctrl-C
then kill, the budget, the summary after a failure, reading JUnit XML) are
checked one by one.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyalexnet.models import get_model

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_run.py"
STEPS = ["machine", "check", "graph_step", "train_graph", "train_alexnet32", "pytest",
         "bench_fp32"]


@pytest.fixture(scope="module")
def gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rehearse(out, *options):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--rehearse", str(out), *options],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """Every step, tiny, on the CPU, with the strict CuPy stand-in as CuPy in every step's
    process (tests/standin_python.py): the CuPy path of each command the GPU run uses."""
    out = tmp_path_factory.mktemp("gpu-run")
    wrapper = f"{sys.executable} {SCRIPT.parent.parent / 'tests' / 'standin_python.py'}"
    return _rehearse(out, "--backend", "cupy", "--python", wrapper), out


def _steps(out):
    return {s["name"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}


def test_the_rehearsal_runs_every_step(rehearsal):
    done, out = rehearsal
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rehearsal"] is True
    assert [s["name"] for s in summary["steps"]] == STEPS
    for step in summary["steps"]:
        assert step["status"] == "ok", step
        log = (out / step["log"]).read_text()
        assert log.startswith("$ ") and "# ok, " in log, step["log"]
    # the short table comes last in the output, one row per step
    table = done.stdout.split("\nstep ")[1]
    assert len([line for line in table.splitlines() if " ok " in line]) == len(STEPS)


def test_the_rehearsal_reads_the_numbers_of_each_step(rehearsal):
    _, out = rehearsal
    steps = {name: s["numbers"] for name, s in _steps(out).items()}
    assert "strict CuPy stand-in" in steps["machine"]["GPU"]       # CuPy was the stand-in
    assert steps["check"]["checks"].startswith("all ") and "images/s" in steps["check"]["speed"]
    assert "ms fused" in steps["check"]["fused_adam"]
    assert steps["pytest"]["cupy_cases"]["passed"] > 0
    assert steps["pytest"]["cupy_cases"]["failed"] == steps["pytest"]["cupy_cases"]["skipped"] == 0
    for bench, tf32 in (("bench_fp32", "off"),):
        assert steps[bench]["images_per_s"]["tinyalexnet"] > 0
        assert steps[bench]["tf32"] == {"tinyalexnet": tf32}
        assert steps[bench]["peak_memory_bytes"]["tinyalexnet"] > 0   # the pool's hook
        layers = [row["layer"] for row in steps[bench]["layers"]]
        assert layers == list(get_model("alexnet_small").layers) + ["loss", "sgd update"]
    train = steps["train_alexnet32"]
    assert train["epochs_done"] == 2 and len(train["images_per_s"]) == 2
    assert 0 <= train["test_accuracy"] <= 1 and train["test_count"] == 160
    assert train["wall_s_end_to_end"] > sum(train["epoch_seconds"])
    history = json.loads((out / "train_alexnet32-history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    log = (out / _steps(out)["train_alexnet32"]["log"]).read_text()
    assert log.count("(includes CuPy's kernel compilation)") == 1     # epoch 1 only
    # the same run with --cuda-graph: captured on the stand-in, and trained as far
    graphed = steps["train_graph"]
    assert graphed["epochs_done"] == 2 and 0 <= graphed["test_accuracy"] <= 1
    log = (out / _steps(out)["train_graph"]["log"]).read_text()
    assert "cuda graph: captured" in log and "not used" not in log, log
    # eager against graph, side by side, and the stand-in's launch counts
    step = steps["graph_step"]
    assert step["graph_used"] == "yes", step
    assert step["eager_ms_per_step"] > 0 and step["graph_ms_per_step"] > 0
    assert step["graph_launches_per_step"] < step["eager_launches_per_step"], step
    assert step["graph_vs_eager_fused_max_rel_diff"] == 0, step    # the same steps, bit for bit


def test_graph_run_step_limits_fit_the_budget(gpu_run, tmp_path):
    """The limits of the GPU run's steps (the CUDA-graph steps included) add up to no more
    than its budget, in the GPU plan and in the rehearsal's: every step gets its full
    limit, whatever the steps before it took."""
    for rehearse in (False, True):
        steps = gpu_run.plan(str(tmp_path), str(tmp_path), str(tmp_path), rehearse)
        names = [s.name for s in steps]
        assert names == STEPS
        assert sum(s.limit for s in steps) <= gpu_run.BUDGET, [(s.name, s.limit) for s in steps]
        assert {"graph_step", "train_graph"} <= set(names)
        assert "--cuda-graph" in steps[names.index("train_graph")].argv
        assert "--cuda-graph" not in steps[names.index("train_alexnet32")].argv


def test_the_markdown_summary_holds_the_table_and_the_layers(rehearsal):
    _, out = rehearsal
    md = (out / "summary.md").read_text()
    assert md.startswith("# tinyalexnet GPU run (CPU rehearsal)")
    rows = [line for line in md.splitlines() if line.startswith("| ") and " | ok | " in line]
    assert len(rows) == len(STEPS)
    for name in get_model("alexnet_small").layers:
        assert f"\n| {name} | " in md


def test_the_numpy_rehearsal_compares_with_pytorch(tmp_path):
    pytest.importorskip("torch")
    done = _rehearse(tmp_path, "--only", "bench_fp32")
    assert done.returncode == 0, done.stdout + done.stderr
    numbers = _steps(tmp_path)["bench_fp32"]["numbers"]
    assert numbers["outputs_agree"] is True and numbers["ratio_images_per_s"] > 0
    assert set(numbers["images_per_s"]) == {"tinyalexnet", "PyTorch"}


def test_a_failing_step_is_recorded_and_the_next_one_runs(gpu_run, tmp_path, monkeypatch):
    steps = [gpu_run.Step("fails", "fails", [sys.executable, "-c", "raise SystemExit(3)"], 30),
             gpu_run.Step("works", "works", [sys.executable, "-c", "print('x: 1')"], 30,
                          gpu_run.read_machine)]
    monkeypatch.setattr(gpu_run, "plan", lambda *a, **k: steps)
    assert gpu_run.main(["--rehearse", str(tmp_path)]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["failed (exit 3)", "ok"]
    assert summary["steps"][1]["numbers"] == {"x": "1"}
    assert "| fails | failed (exit 3) |" in (tmp_path / "summary.md").read_text()


def test_a_hanging_step_gets_ctrl_c_first(gpu_run, tmp_path):
    """Over its limit, a step gets SIGINT (training saves its checkpoint), then the next starts."""
    saved = tmp_path / "saved"
    code = ("import time, pathlib\n"
            "try:\n    time.sleep(60)\n"
            f"except KeyboardInterrupt:\n    pathlib.Path({str(saved)!r}).write_text('yes')\n")
    step = gpu_run.Step("hangs", "hangs", [sys.executable, "-c", code], 2)
    start = time.perf_counter()
    gpu_run.run_step(step, str(tmp_path), 1, 100)
    assert step.status == "timed out after 2 s"
    assert time.perf_counter() - start < 2 + gpu_run.GRACE
    assert saved.read_text() == "yes"


def test_a_step_that_ignores_ctrl_c_is_killed(gpu_run, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_run, "GRACE", 1)
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    step = gpu_run.Step("stubborn", "stubborn", [sys.executable, "-c", code], 2)
    start = time.perf_counter()
    gpu_run.run_step(step, str(tmp_path), 1, 100)
    assert step.status.startswith("timed out") and time.perf_counter() - start < 15


def test_a_step_without_enough_budget_is_skipped(gpu_run, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_run, "MIN_START", 2)
    step = gpu_run.Step("late", "late", [sys.executable, "-c", "raise SystemExit(1)"], 60)
    gpu_run.run_step(step, str(tmp_path), 7, 1.5)
    assert step.status == "skipped: 2 s of the budget left" and step.seconds is None
    assert not (tmp_path / step.log).exists()
    step = gpu_run.Step("capped", "capped", [sys.executable, "-c", "import time; time.sleep(30)"],
                        60)
    gpu_run.run_step(step, str(tmp_path), 8, 2)        # the budget left caps its limit
    assert step.status == "timed out after 2 s"


def test_cupy_cases_are_counted_from_junit_xml(gpu_run, tmp_path):
    (tmp_path / "pytest.xml").write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.test_layers" name="test_relu[cupy]"/>'
        '<testcase classname="tests.test_layers" name="test_relu[numpy]"/>'
        '<testcase classname="tests.test_layers" name="test_conv[cupy-3-4]"><failure/></testcase>'
        '<testcase classname="tests.test_layers" name="test_pool[cupy]"><skipped/></testcase>'
        '<testcase classname="tests.test_layout" name="test_only_backend_imports_cupy"/>'
        '</testsuite></testsuites>')
    log = tmp_path / "log"
    log.write_text("== 2 passed, 1 failed, 1 skipped in 3.1s ==\n")
    numbers = gpu_run.read_pytest(str(tmp_path))(None, str(log))
    assert numbers["cupy_cases"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert numbers["cupy_failed"] == ["tests.test_layers::test_conv[cupy-3-4]"]
    assert numbers["summary"] == "2 passed, 1 failed, 1 skipped in 3.1s"


def test_missing_data_files_stop_at_once(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "data"),
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.count("\n") == 1 and "t10k-labels-idx1-ubyte.gz" in done.stderr
    assert "train-images-idx3-ubyte.gz" not in done.stderr
