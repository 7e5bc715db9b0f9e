"""``python -m tinyalexnet check``: exit 0 when the backend computes right, 1 naming what
does not, 2 with the reason when the backend cannot be used.

On the CPU the backend is NumPy; the failures are planted (a wrong backward pass,
a bug that shows only in float32 as a GPU-only bug would) to see that the
command can fail and says where.
"""
import re

import pytest

import kernel_references
from tinyalexnet import backend, check, cli, layers
from tinyalexnet.layers import LocalResponseNorm, MaxPool2d


def _run(capsys, *argv):
    code = cli.main(["check", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_passes_on_numpy_and_covers_every_layer(capsys):
    code, out, _ = _run(capsys, "--models", "alexnet_small,alexnet32")
    assert code == 0, out
    assert "check: all" in out and "FAIL" not in out
    # Every layer class the package exports is gradient-checked (an independent list:
    # the package's own __all__, less the base class and the container).
    kinds = set(layers.__all__) - {"Module", "Sequential"}
    gradient_lines = re.findall(r"^  ok    (\w+)[ :]", out.split("one training step")[0], re.M)
    assert kinds <= set(gradient_lines), kinds - set(gradient_lines)
    for model in ("alexnet_small", "alexnet32"):
        line = re.search(rf"^  ok    {model} .*logits and loss ([\d.e+-]+), worst of \d+ "
                         rf"gradients and velocities ([\d.e+-]+)", out, re.M)
        assert line, out
        # float32 against float64: close, but not identical (a float32 step really ran)
        assert 0 < float(line.group(1)) <= check.STEP_BOUND["output"]
        assert 0 < float(line.group(2)) <= check.STEP_BOUND["gradient"]
    assert re.search(r"^  alexnet_small, batch 64, float32 training steps: [\d,]+ images/s", out,
                     re.M)
    assert "backend: numpy" in out and "NumPy BLAS" in out


NUMBERS = {"three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def test_the_docstring_names_the_parts_the_command_prints(capsys, monkeypatch):
    """"It prints N parts" and the numbered list under it: as many, in the order printed."""
    promised = re.search(r"It prints (\w+) parts", check.__doc__)
    listed = re.findall(r"^(\d+)\. \*\*([^*]+)\*\*", check.__doc__, re.M)
    titles = []
    real = check.Report.section
    monkeypatch.setattr(check.Report, "section",
                        lambda self, title: titles.append(title) or real(self, title))
    code, out, _ = _run(capsys, "--models", "alexnet_small", "--speed-batch", "2")
    assert code == 0, out
    assert promised and NUMBERS[promised.group(1)] == len(listed) == len(titles), (listed, titles)
    assert [int(n) for n, _ in listed] == list(range(1, len(listed) + 1))
    for (_, name), title in zip(listed, titles):
        assert title.split()[0].rstrip(":") == name.split()[0], (name, title)


def test_a_wrong_backward_pass_fails_with_its_name(capsys, monkeypatch):
    right = LocalResponseNorm.backward
    monkeypatch.setattr(LocalResponseNorm, "backward", lambda self, d: 1.01 * right(self, d))
    code, out, _ = _run(capsys, "--models", "alexnet_small")
    assert code == 1
    summary = out.split("checks FAILED on numpy:")[1]
    assert "gradient of LocalResponseNorm" in summary
    assert summary.count("\n  - ") == 1, summary      # nothing else is blamed


def test_a_float32_only_bug_fails_the_training_step(capsys, monkeypatch):
    """As a GPU-only bug would: right in float64 (the reference), wrong in float32."""
    right = MaxPool2d.forward

    def forward(self, x):
        out = right(self, x)
        return out * 1.001 if out.dtype.name == "float32" else out

    monkeypatch.setattr(MaxPool2d, "forward", forward)
    code, out, _ = _run(capsys, "--models", "alexnet_small")
    assert code == 1
    summary = out.split("checks FAILED on numpy:")[1]
    assert "training step of alexnet_small" in summary and "gradient of" not in summary


def test_an_unavailable_backend_exits_2_with_the_reason(capsys, monkeypatch):
    monkeypatch.setattr(backend, "_gpu_reason", None)
    monkeypatch.setenv("TINYALEXNET_DISABLE_GPU", "1")
    code, out, err = _run(capsys, "--backend", "cupy")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backend 'cupy' is unavailable")
    assert "TINYALEXNET_DISABLE_GPU" in lines[0]


def test_an_unknown_model_is_a_one_line_error(capsys):
    code, _, err = _run(capsys, "--models", "alexnet_small,vgg")
    assert code == 2 and err.count("\n") == 1 and "'vgg'" in err


@pytest.mark.parametrize("name", ["numpy"])
def test_images_per_second_counts_the_images_of_the_steps(name, monkeypatch):
    """The speed figure is batch * steps over the time of the steps alone."""
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(check.time, "perf_counter", lambda: next(clock))
    assert check.images_per_second(name, "alexnet_small", 4, 1, 3) == pytest.approx(4 * 3 / 2.0)


def test_check_runs_on_the_strict_cupy_standin(capsys, standin, monkeypatch):
    """The CuPy path of the command, on the stand-in (CuPy's rules, NumPy's arithmetic)."""
    monkeypatch.setenv("CUPY_TF32", "1")          # as a user might have it set
    kernel_references.register(standin)           # each kernel as its NumPy reference
    seen = []
    real_step = check.one_step

    def one_step(model, name, dtype, x, y):
        seen.append((name, backend.tf32_enabled()))
        return real_step(model, name, dtype, x, y)

    monkeypatch.setattr(check, "one_step", one_step)
    code, out, _ = _run(capsys, "--backend", "cupy", "--models", "alexnet_small", "--speed-model",
                        "alexnet_small", "--speed-batch", "8")
    assert re.search(r"^  alexnet_small, batch 8, float32 training steps: [\d,]+ images/s", out,
                     re.M)
    assert seen == [("numpy", False), ("cupy", False)]
    assert code == 0, out
    assert "backend: cupy (CUDA GPU)" in out and "GPU: strict CuPy stand-in" in out
    assert "CUDA: runtime 13.0" in out
    # TF32 is off while checking, whatever the environment said, and restored after
    assert "TF32: off during the checks (it was on)" in out
    assert backend.tf32_enabled()
    assert re.search(r"^  ok    alexnet_small .*, worst of \d+ gradients", out, re.M)
    line = re.search(r"^  ok    Adam, one kernel per parameter: ([\d.e+-]+) from", out, re.M)
    assert line and float(line.group(1)) <= check.FUSED_BOUND
    for label, *_ in check.KERNEL_LAYERS:           # every layer's kernels, compared and timed
        assert re.search(rf"^  ok    {re.escape(label)}: kernels .* ms as array code$", out, re.M)
    for name in ("SoftmaxCrossEntropy, 64 x 1000: kernels", "SGD, one kernel per parameter",
                 "top-k counts, 64 x 1000: the kernel's counts differ from the array code's in "
                 "0 / 0 of 64 rows",
                 "input pipeline, 64 x 3 x 32 x 32: the crop kernel 0.0e+00 from NumPy's"):
        assert f"ok    {name}" in out


def test_check_fails_a_kernel_that_computes_wrong(standin, capsys):
    """A kernel whose result is off (here its stand-in reference, planted) is a named FAIL."""
    import strict_cupy
    from tinyalexnet.kernels import relu

    right = strict_cupy.KERNEL_REFERENCES[relu.BACKWARD.name]

    def wrong(grid, block, args):
        right(grid, block, args)
        dx = standin.host_arrays(args[2])
        dx *= 1.0001                                # a scale a few ulps would never give

    standin.register_kernel(relu.BACKWARD.name, wrong)
    try:
        report = check.Report()
        check.check_kernels(report, "cupy")
    finally:
        standin.register_kernel(relu.BACKWARD.name, right)
    out = capsys.readouterr().out
    assert [f.split(":")[0] for f in report.failures] == ["kernels of ReLU"], out
    assert re.search(r"^  FAIL  ReLU: kernels 1\.0e-04 / 1\.0e-04 from the array code", out, re.M)
