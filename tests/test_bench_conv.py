"""The Winograd report (python -m tinyalexnet.bench_conv) and bench's --conv switch.

No timing is asserted: only that the report has its rows and that its counts
agree with the layers' own multiply-adds (Conv2d.macs), and that --conv sets
Conv2d.use_winograd in every layer.
"""
import argparse
import re
import subprocess
import sys

from tinyalexnet import bench, bench_conv
from tinyalexnet.layers import Conv2d
from tinyalexnet.models import get_model


def _args(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_conv_reports_every_3x3_layer(capsys):
    assert bench_conv.run(_args(bench_conv, ["--model", "alexnet_small", "--batch-size", "2",
                                             "--repeats", "1"])) == 0
    text = capsys.readouterr().out
    model = get_model("alexnet_small")
    shapes = dict((name, shape) for name, _, shape in bench_conv.conv_inputs(model))
    for name in ("conv3", "conv4", "conv5"):             # alexnet_small's 3x3 stride-1 layers
        direct = model.layers[name].macs(shapes[name]) / 1e6
        row = re.search(rf"^{name}\s+\d+->\d+, 7x7, g\d\s+([\d.]+)\s+([\d.]+)", text, re.MULTILINE)
        assert row, f"no multiplication row for {name} in:\n{text}"
        assert abs(float(row.group(1)) - direct) < 0.05
        assert re.search(rf"^{name}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+-[\d.]+\s+\d", text,
                         re.MULTILINE), f"no timing row for {name}"
    assert not re.search(r"^conv[12]\s", text, re.MULTILINE)     # 5x5 kernels: not reported
    assert re.search(r"whole training step of alexnet_small.*speed-up [\d.]+ \(spread", text, re.S)


def test_bench_conv_bad_option_is_one_line():
    done = subprocess.run([sys.executable, "-m", "tinyalexnet.bench_conv", "--repeats", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: bench_conv: --batch-size and --repeats must be at "
                                   "least 1, got 64 and 0")


def test_bench_conv_switch_sets_every_layer(capsys):
    for choice, expected in (("im2col", 0), ("winograd", 3)):
        args = _args(bench, ["--model", "alexnet_small", "--batch-size", "2", "--steps", "1",
                             "--warmup", "0", "--layer-steps", "0", "--no-memory",
                             "--conv", choice])
        runner = bench.OursRunner(args)
        convs = [m for _, m in runner.model.named_modules() if isinstance(m, Conv2d)]
        assert all(m.use_winograd == (choice == "winograd") for m in convs)
        assert sum(m.winograd_applies() for m in convs) == expected
        assert bench.run(args) == 0
        assert f"Winograd F(2x2, 3x3) in {expected} of 5 conv layers" in capsys.readouterr().out
