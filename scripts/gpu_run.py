"""The GPU run: everything a CUDA GPU has to show about tinyalexnet, in one go, offline.

    python scripts/gpu_run.py FASHION_MNIST_DIR OUT_DIR

FASHION_MNIST_DIR holds the four official files (train-images-idx3-ubyte.gz,
train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz);
no network is used.  It needs CuPy, PyTorch with CUDA and pytest.  Every step
writes its log to OUT_DIR; OUT_DIR/summary.md (to read) and OUT_DIR/summary.json
(the same numbers) are written after every step, so a run cut short still leaves
them.  The most valuable steps come first:

  1. check       python -m tinyalexnet check --backend cupy
  2. graph_step  eager against CUDA graphs (graph.py): ms per alexnet32 b64 Adam step,
                 the same Trainer step eagerly (as trained by default, and with the
                 fused update graph mode runs) and replayed, timed in alternating
                 blocks; the weights of the graph and the fused eager run after the
                 same steps (their largest relative difference: 0 expected); and the
                 launches per step of both, counted by the CPU stand-in
                 (tests/launch_counts.py)
  3. train       alexnet32 on Fashion-MNIST, recipe adam15 (Adam 1e-3, batch 64, 15 epochs,
                 as in a published PyTorch/TensorFlow CIFAR-10 comparison) with
                 --cuda-graph: time end to end (process start to exit, data loading
                 included) and test accuracy
  4. train     the same run eagerly (without --cuda-graph)
  5. pytest    the suite's CuPy cases with the GPU visible (counted from JUnit XML)
  6. bench     alexnet, batch 128, against PyTorch/cuDNN, TF32 off on both sides; peak
               GPU memory of both; per-layer table

plus a first step that records the machine (nvidia-smi, versions).  Each step
has its own time limit, and the limits add up to no more than the whole run's
budget (``--budget``, 470 s: the run fits in 8 minutes; tests/test_gpu_run.py
checks the sum, so a new step must take its seconds from another).  The TF32
bench and the 227x227 training of earlier plans no longer fit the budget: run
them by hand (README, "Using a GPU").  A step that hangs is stopped (Ctrl-C first, so training
saves its checkpoint and history, then killed) and the next one starts; a step
that would start with too little budget left is skipped and says so.

``--rehearse OUT_DIR`` runs the same plumbing on the CPU in a minute (NumPy backend,
tiny models, the embedded data set instead of FASHION_MNIST_DIR): the test
suite runs it (tests/test_gpu_run.py), so the GPU minutes are not spent
debugging this script.  ``--bundle DIR`` also copies summary.md, summary.json
and one .tar.gz of every log into DIR, for a machine that returns few files.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
BUDGET = 470          # seconds for the whole run
MIN_START = 20        # a step needs at least this much budget left to be started
GRACE = 10            # seconds between Ctrl-C and kill for a step over its limit


class Step:
    """One command of the run: its name, arguments, time limit, and what to read from it."""

    def __init__(self, name, title, argv, limit, read=None, run_dir=None):
        self.name, self.title, self.argv, self.limit = name, title, argv, limit
        self.read, self.run_dir = read, run_dir
        self.status, self.seconds, self.numbers, self.log = "not run", None, {}, None

    def record(self):
        return {"name": self.name, "title": self.title, "command": " ".join(self.argv),
                "limit_s": self.limit, "status": self.status, "seconds": self.seconds,
                "log": self.log, "numbers": self.numbers}


# ---------------------------------------------------------------------------- the plan
def plan(data_dir, out, runs, rehearse, be="cupy", python=(sys.executable,)):
    """The steps of the run, in order.  ``rehearse``: the same steps, tiny (on the CPU).
    ``be``: the backend; ``python``: the command that runs Python."""
    py, tiny = list(python), rehearse
    data = (["--dataset", "fashion-mnist-subset", "--limit", "160"] if tiny
            else ["--dataset", "fashion-mnist", "--data-dir", data_dir])
    have_torch = _importable("torch")
    bench = py + ["-m", "tinyalexnet", "bench", "--backend", be]
    bench += (["--model", "alexnet_small", "--batch-size", "2", "--steps", "2", "--warmup", "1",
               "--layer-steps", "1"] + (["--no-memory"] if be == "numpy" else []) if tiny
              else ["--model", "alexnet", "--batch-size", "128", "--steps", "20", "--warmup", "3",
                    "--layer-steps", "5"])
    if not tiny or (be == "numpy" and have_torch):      # a rehearsal has no CUDA PyTorch
        bench += ["--compare", "torch"]
    train = py + ["-m", "tinyalexnet", "train", "--backend", be, "--no-progress"] + data
    pytest = py + ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                   os.path.join(out, "pytest.xml")]
    pytest += (["tests/test_rng.py", "-k", "numpy" if be == "numpy" else "cupy"] if tiny
               else ["-k", "cupy and not lesson and not standin"])   # the [cupy] cases
    alexnet32 = os.path.join(runs, "alexnet32-fashion-mnist")
    adam15 = train + ["--recipe", "adam15", "--model", "alexnet_small" if tiny else "alexnet32"]
    adam15 += ["--batch-size", "32", "--epochs", "2"] if tiny else []
    graph_step = py + [os.path.abspath(__file__), "--graph-step", be]
    graph_step += ["alexnet_small", "8", "2"] if tiny else ["alexnet32", "64", "50"]
    return [
        Step("machine", "the machine", py + [os.path.abspath(__file__), "--describe"], 20,
             read_machine),
        Step("check", f"check --backend {be}", py + ["-m", "tinyalexnet", "check", "--backend", be]
             + (["--models", "alexnet_small", "--speed-model", "alexnet_small", "--speed-batch",
                 "8"] if tiny
                else []), 60, read_check),
        Step("graph_step", "eager vs CUDA graph step, alexnet32 b64 Adam", graph_step, 50,
             read_graph_step),
        Step("train_graph", "train alexnet32, recipe adam15 (Adam 1e-3, batch 64, 15 epochs), "
             "--cuda-graph", adam15 + ["--cuda-graph", "--out", alexnet32 + "-graph"], 110,
             read_train, alexnet32 + "-graph"),
        Step("train_alexnet32", "train alexnet32, recipe adam15, eager",
             adam15 + ["--out", alexnet32], 120, read_train, alexnet32),
        Step("pytest", "the suite's CuPy cases", pytest, 60, read_pytest(out)),
        Step("bench_fp32", "bench alexnet 128 vs PyTorch, TF32 off",
             bench + ["--tf32", "off", "--json", os.path.join(out, "bench_tf32_off.json")], 50,
             read_bench(os.path.join(out, "bench_tf32_off.json"))),
    ]


def _importable(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True).returncode == 0


# ---------------------------------------------------------------------------- running a step
def run_step(step, out, index, time_left):
    """Run ``step`` with its log in ``out``, for at most min(its limit, ``time_left``) s."""
    limit = min(step.limit, time_left)
    step.log = f"{index:02d}-{step.name}.log"
    if time_left < MIN_START:
        step.status = f"skipped: {time_left:.0f} s of the budget left"
        return step
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with open(os.path.join(out, step.log), "w") as log:
        log.write(f"$ {' '.join(step.argv)}\n# limit {limit:.0f} s, started "
                  f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
        log.flush()
        # A session of its own, so that a stop reaches the command's children too.
        proc = subprocess.Popen(step.argv, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            step.status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            _stop(proc)
            step.status = f"timed out after {limit:.0f} s"
        step.seconds = round(time.perf_counter() - start, 1)
        log.write(f"\n# {step.status}, {step.seconds} s\n")
    if step.read is not None:
        try:
            step.numbers = step.read(step, os.path.join(out, step.log)) or {}
        except Exception as err:           # a reader must never cost the summary
            step.numbers = {"read_error": f"{type(err).__name__}: {err}"}
    return step


def _stop(proc):
    """Ctrl-C (training saves its checkpoint and history), then kill after GRACE s."""
    for sig, wait in ((signal.SIGINT, GRACE), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------------------- reading results
def _text(path):
    with open(path, errors="replace") as f:
        return f.read()


def read_machine(step, log):
    found = {}
    for line in _text(log).splitlines():
        if ": " in line and not line.startswith(("$", "#")):
            key, value = line.split(": ", 1)
            found[key.strip()] = value.strip()
    return found


def read_check(step, log):
    text = _text(log)
    numbers = {}
    m = re.search(r"^check: all (\d+) checks hold", text, re.M)
    if m:
        numbers["checks"] = f"all {m.group(1)} hold"
    m = re.search(r"^check: (\d+) of (\d+) checks FAILED.*?:\n((?:  - .*\n?)*)", text, re.M)
    if m:
        numbers["checks"] = f"{m.group(1)} of {m.group(2)} failed"
        numbers["failures"] = [f[4:] for f in m.group(3).splitlines()]
    m = re.search(r"^  (\w+), batch (\d+), float32 training steps: ([\d,]+) images/s", text, re.M)
    if m:
        numbers["speed"] = f"{m.group(1)} batch {m.group(2)}: {m.group(3)} images/s"
    m = re.search(r"^  (?:ok  |FAIL)  (Adam, one kernel per parameter: .*)$", text, re.M)
    if m:
        numbers["fused_adam"] = m.group(1)
    m = re.search(r"^  GPU: (.*)$", text, re.M)
    if m:
        numbers["gpu"] = m.group(1)
    return numbers


def read_pytest(out):
    def read(step, log):
        numbers = {}
        m = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error|deselected).*?)\s*=*$",
                       _text(log), re.M)
        if m:
            numbers["summary"] = m[-1]
        path = os.path.join(out, "pytest.xml")
        if os.path.exists(path):
            counts = {"passed": 0, "failed": 0, "skipped": 0}
            failed = []
            for case in ElementTree.parse(path).getroot().iter("testcase"):
                name = case.get("name", "")
                if "[" not in name or "cupy" not in name.split("[", 1)[1]:
                    continue                               # only the cases run on CuPy
                if case.find("failure") is not None or case.find("error") is not None:
                    counts["failed"] += 1
                    failed.append(f"{case.get('classname')}::{name}")
                elif case.find("skipped") is not None:
                    counts["skipped"] += 1
                else:
                    counts["passed"] += 1
            numbers["cupy_cases"] = counts
            if failed:
                numbers["cupy_failed"] = failed[:30]
        return numbers
    return read


def read_bench(path):
    def read(step, log):
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            r = json.load(f)
        numbers = {k: r.get(k) for k in ("device", "tf32", "images_per_s", "ratio_images_per_s",
                                          "peak_memory_bytes", "ratio_peak_memory", "step_seconds")}
        numbers["outputs_agree"] = (r.get("check") or {}).get("ok")
        if r.get("layers"):
            numbers["layers"] = r["layers"]
        return numbers
    return read


def read_graph_step(step, log):
    """The ``name value`` lines ``--graph-step`` prints."""
    numbers = {}
    for m in re.finditer(r"^(\w+) (\S+)$", _text(log), re.M):
        value = m.group(2)
        try:
            value = float(value) if "." in value else int(value)
        except ValueError:
            pass
        numbers[m.group(1)] = value
    return numbers


def graph_step(be, model, batch, steps, rounds=3):
    """Print ms per training step of one Trainer step, eager and replayed as CUDA graphs
    (``cuda_graph=True``), timed in alternating blocks of ``steps`` steps on random
    32x32 images; then the launches per step of both, counted by the CPU stand-in."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import numpy as np
    from tinyalexnet import backend
    from tinyalexnet.config import make_config
    from tinyalexnet.datasets import ArrayDataset
    from tinyalexnet.metrics import RunningMeter
    from tinyalexnet.train import Trainer
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (4 * batch, 3, 32, 32)).astype(np.uint8),
                        rng.integers(0, 10, 4 * batch), [f"c{k}" for k in range(10)])
    trainers, lines = {}, []
    # eager as trained by default; eager with the fused update kernel (what graph mode runs:
    # the same computation, launched one kernel at a time); replayed as CUDA graphs
    for name, graph in (("eager", False), ("eager_fused", False), ("graph", True)):
        config = make_config(recipe="adam15", model=model, batch_size=batch, backend=be,
                             cuda_graph=graph)
        t = Trainer(config, tempfile.mkdtemp(prefix=f"graph-step-{name}-"),
                    datasets=(data, data, data), progress=False, log=lines.append)
        t.optimizer.fused = t.optimizer.fused or name == "eager_fused"
        t.meter = RunningMeter(t.xp)
        trainers[name] = t
    batches = [data.get_batch(np.arange(k * batch, (k + 1) * batch)) for k in range(4)]
    done = {name: 0 for name in trainers}

    def run(name, n):
        t = trainers[name]
        for _ in range(n):
            t._train_step(done[name] % 4, *batches[done[name] % 4])
            done[name] += 1
        t.meter.read()                                 # the one read: the device has finished
        backend.synchronize(t.xp)

    for name in trainers:
        run(name, 3)                                   # warm-up (and the capture)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name in trainers:
            start = time.perf_counter()
            run(name, steps)
            times[name].append((time.perf_counter() - start) * 1000 / steps)
    for line in lines:
        print(f"# {line}")
    graph_used = trainers["graph"].graph.graph is not None
    print(f"graph_used {'yes' if graph_used else 'no'}")
    for name in trainers:
        print(f"{name}_ms_per_step {min(times[name]):.3f}")
    print(f"speedup {min(times['eager']) / min(times['graph']):.3f}")
    # the same steps on the same batches: graph and eager_fused should hold the same weights
    worst = 0.0
    for (_, p, _), (_, q, _) in zip(trainers["graph"].model.named_parameters(),
                                    trainers["eager_fused"].model.named_parameters()):
        p, q = backend.as_numpy(p).astype(np.float64), backend.as_numpy(q).astype(np.float64)
        worst = max(worst, float(np.abs(p - q).max() / max(np.abs(q).max(), 1e-30)))
    print(f"graph_vs_eager_fused_max_rel_diff {worst:.3g}")
    try:                                               # counted on the CPU stand-in
        import launch_counts
        counts = launch_counts.eager_vs_graph(model, batch, "adam", show=False)
        print(f"eager_launches_per_step {counts['eager'].count}")
        print(f"graph_launches_per_step {counts['graph'].count}")
    except Exception as err:      # pytest or the stand-in missing: the times still stand
        print(f"# launch counts not available: {type(err).__name__}: {err}")
    return 0


def read_train(step, log):
    """Test accuracy (test.json), per-epoch time and images/s (history.json), wall time."""
    numbers = {"wall_s_end_to_end": step.seconds}
    history_path = os.path.join(step.run_dir, "history.json")
    if os.path.exists(history_path):
        with open(history_path) as f:
            history = json.load(f)
        numbers["epochs_done"] = len(history)
        numbers["epoch_seconds"] = [h["time"] for h in history]
        numbers["images_per_s"] = [h["images_per_s"] for h in history]
        numbers["val_top1_error"] = [h["val_top1_error"] for h in history]
        later = [h["images_per_s"] for h in history[1:]]
        if later:      # the first epoch includes CuPy's kernel compilation
            numbers["images_per_s_after_epoch_1"] = round(sum(later) / len(later), 1)
    test_path = os.path.join(step.run_dir, "test.json")
    if os.path.exists(test_path):
        with open(test_path) as f:
            test = json.load(f)
        numbers["test_accuracy"] = test["accuracy"]
        numbers["test_count"] = test["count"]
    return numbers


# ---------------------------------------------------------------------------- the summary
def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def headline(step):
    """One short line of the step's main numbers, for the table."""
    n = step.numbers
    if step.name == "check":
        return "; ".join(str(n[k]) for k in ("checks", "speed") if k in n)
    if step.name == "pytest":
        c = n.get("cupy_cases")
        return (f"CuPy cases: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
                if c else n.get("summary", ""))
    if step.name.startswith("bench"):
        ips = n.get("images_per_s") or {}
        parts = [f"{k} {v:.0f} img/s" for k, v in ips.items()]
        if n.get("ratio_images_per_s") is not None:
            parts.append(f"ratio {n['ratio_images_per_s']:.2f}")
        peaks = n.get("peak_memory_bytes") or {}
        if peaks and None not in peaks.values():
            parts.append("peak " + "/".join(f"{v / 2**20:.0f}" for v in peaks.values()) + " MiB")
        if n.get("ratio_peak_memory") is not None:
            parts.append(f"memory ratio {n['ratio_peak_memory']:.2f}")
        return ", ".join(parts)
    if step.name.startswith("train"):
        parts = [f"{n.get('epochs_done', 0)} epochs"]
        if "test_accuracy" in n:
            parts.append(f"test accuracy {100 * n['test_accuracy']:.2f}%")
        if n.get("images_per_s"):
            parts.append(f"{n['images_per_s'][-1]:.0f} img/s (last epoch)")
        parts.append(f"{step.seconds} s end to end")
        return ", ".join(parts)
    if step.name == "machine":
        return n.get("GPU", n.get("nvidia-smi", ""))
    return ""


def write_summary(steps, out, started, budget, rehearse):
    """summary.json and summary.md in ``out`` (written after every step)."""
    record = {"date": datetime.date.today().isoformat(), "started": started,
              "rehearsal": rehearse, "budget_s": budget,
              "total_s": round(sum(s.seconds or 0 for s in steps), 1),
              "steps": [s.record() for s in steps]}
    _write(os.path.join(out, "summary.json"), json.dumps(record, indent=1))
    lines = [f"# tinyalexnet GPU run{' (CPU rehearsal)' if rehearse else ''}, {record['date']}",
             "", f"Started {started}; {record['total_s']} s of steps; budget {budget} s.", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s.title} | {s.status} | {s.seconds if s.seconds is not None else '-'} "
                     f"| {headline(s)} |")
    for s in steps:
        lines += ["", f"## {s.title}", "", f"`{' '.join(s.argv)}`", "",
                  f"{s.status}, {s.seconds} s (limit {s.limit} s), log `{s.log}`", ""]
        for key, value in s.numbers.items():
            if key != "layers":
                lines.append(f"- {key}: {_fmt(value)}")
        if s.numbers.get("layers"):
            total = sum(r["forward_s"] + r["backward_s"] for r in s.numbers["layers"]) or 1
            lines += ["", "| layer | type | forward ms | backward ms | share |",
                      "|---|---|---|---|---|"]
            for r in s.numbers["layers"]:
                lines.append(f"| {r['layer']} | {r['type']} | {1000 * r['forward_s']:.2f} | "
                             f"{1000 * r['backward_s']:.2f} | "
                             f"{100 * (r['forward_s'] + r['backward_s']) / total:.1f}% |")
    _write(os.path.join(out, "summary.md"), "\n".join(lines) + "\n")


def _write(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"            # this script runs before the package is trusted
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def print_table(steps):
    width = max(len(s.title) for s in steps)
    print(f"\n{'step':<{width}}  {'status':<22} {'s':>6}  result")
    for s in steps:
        seconds = f"{s.seconds:.0f}" if s.seconds is not None else "-"
        print(f"{s.title:<{width}}  {s.status[:22]:<22} {seconds:>6}  {headline(s)[:110]}")


def describe():
    """The machine, one 'what: value' per line (the first step runs this)."""
    import platform
    print(f"python: {sys.version.split()[0]} on {platform.platform()}")
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
        print(f"nvidia-smi: {done.stdout.strip() or done.stderr.strip()}")
    else:
        print("nvidia-smi: not found")
    for module in ("numpy", "cupy", "torch", "pytest"):
        try:
            mod = __import__(module)
            print(f"{module}: {mod.__version__}")
        except Exception as err:
            print(f"{module}: not importable ({type(err).__name__}: {err})")
    sys.path.insert(0, ROOT)
    from tinyalexnet import backend
    reason = backend.gpu_unavailable_reason()
    if reason:
        print(f"GPU backend: unavailable: {reason}")
    else:
        for key, value in backend.device_info("cupy").items():
            print(f"{key}: {value}")
    return 0


# ---------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", help="folder with the four Fashion-MNIST .gz files")
    parser.add_argument("out_dir", nargs="?", help="folder for the logs and the summary")
    parser.add_argument("--budget", type=float, default=BUDGET,
                        help=f"seconds for all steps together (default {BUDGET})")
    parser.add_argument("--rehearse", action="store_true",
                        help="run the plumbing on the CPU with tiny settings (tests use this)")
    parser.add_argument("--only", help="comma-separated step names to run (default: all)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="default: cupy (numpy with --rehearse)")
    parser.add_argument("--python", default=None,
                        help="the command that runs Python in each step (default: this Python)")
    parser.add_argument("--bundle", help="also copy summary.md, summary.json and a .tar.gz of "
                                         "every log into this folder")
    parser.add_argument("--describe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graph-step", nargs=4, metavar=("BACKEND", "MODEL", "BATCH", "STEPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.describe:
        return describe()
    if args.graph_step:
        be, model, batch, steps = args.graph_step
        return graph_step(be, model, int(batch), int(steps))
    if args.rehearse and args.out_dir is None:        # --rehearse OUT_DIR: no data needed
        args.data_dir, args.out_dir = None, args.data_dir
    if not args.out_dir or (not args.data_dir and not args.rehearse):
        parser.error("give FASHION_MNIST_DIR and OUT_DIR")
    if not args.rehearse:
        missing = [f for f in FASHION_MNIST_FILES
                   if not os.path.isfile(os.path.join(args.data_dir, f))]
        if missing:
            print(f"error: {args.data_dir}: missing {', '.join(missing)} (expected the four "
                  f"official Fashion-MNIST files)", file=sys.stderr)
            return 2
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    runs = tempfile.mkdtemp(prefix="tinyalexnet-gpu-runs-")     # checkpoints stay out of out
    started = datetime.datetime.now().isoformat(timespec="seconds")
    python = shlex.split(args.python) if args.python else [sys.executable]
    be = args.backend or ("numpy" if args.rehearse else "cupy")
    steps = plan(os.path.abspath(args.data_dir or "."), out, runs, args.rehearse, be, python)
    if args.only:
        keep = set(args.only.split(","))
        steps = [s for s in steps if s.name in keep]
    clock = time.perf_counter()
    try:
        for index, step in enumerate(steps, 1):
            left = args.budget - (time.perf_counter() - clock)
            print(f"[{index}/{len(steps)}] {step.title} (limit {min(step.limit, left):.0f} s) ...",
                  flush=True)
            run_step(step, out, index, left)
            print(f"    {step.status}, {step.seconds} s: {headline(step)}", flush=True)
            for name in ("history.json", "history.csv", "test.json"):   # small: keep a copy
                src = os.path.join(step.run_dir or "", name)
                if step.run_dir and os.path.exists(src):
                    shutil.copy(src, os.path.join(out, f"{step.name}-{name}"))
            write_summary(steps, out, started, args.budget, args.rehearse)
    finally:
        write_summary(steps, out, started, args.budget, args.rehearse)
        shutil.rmtree(runs, ignore_errors=True)
    if args.bundle:
        os.makedirs(args.bundle, exist_ok=True)
        for name in ("summary.md", "summary.json"):
            shutil.copy(os.path.join(out, name), args.bundle)
        with tarfile.open(os.path.join(args.bundle, "logs.tar.gz"), "w:gz") as tar:
            tar.add(out, arcname="gpu-run")
    print_table(steps)
    print(f"\nsummary: {os.path.join(out, 'summary.md')}")
    return 0 if all(s.status == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
