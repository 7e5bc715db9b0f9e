"""The benchmark's report: prints each record of ``bench_measure.py`` as it comes,
and collects the same numbers for ``--json``.

One method per record, called in the order the command measures:

    report = Report(args)
    report.setup(...)        the device, the settings, TF32, PyTorch's version
    report.agreement(...)    --compare torch: do both frameworks compute the same?
    report.speed(...)        step time and images/s per framework, peak memory, ratios
    report.layers(...)       time per layer
    report.write_json(path)

A new measurement joins the report as one more method: it prints its lines
and adds its keys to ``self.results`` (the JSON), which keeps every earlier key.
"""
import datetime
import json

from .machine import load_line
from .runfolder import write_text_atomic


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


class Report:
    """The printed report of one ``bench`` run and its JSON (``self.results``)."""

    def __init__(self, args):
        self.args = args
        self.names = ["tinyalexnet"]          # the frameworks, in the table's columns
        self.results = {"date": datetime.date.today().isoformat(), "model": args.model,
                        "batch_size": args.batch_size, "backend": args.backend,
                        "dtype": args.dtype, "steps": args.steps, "warmup": args.warmup}

    def setup(self, s):
        """What is timed, and on what (a ``bench_measure.Setup``)."""
        a = self.args
        print(f"tinyalexnet bench: model {a.model}, batch {a.batch_size}, {a.dtype}, "
              f"backend {a.backend}, {a.steps} timed steps after {a.warmup} warm-up")
        print(f"device: {s.device}")
        print(f"settings: im2col cols kept for backward in {s.cached} of {s.convs} conv layers "
              f"(Conv2d.cache_cols), per-layer NaN checks {'on' if s.check_finite else 'off'}")
        print(f"          Winograd F(2x2, 3x3) in {s.winograd} of {s.convs} conv layers "
              f"(Conv2d.use_winograd; the others: im2col)")
        if a.backend == "numpy":
            print(s.blas)
        if s.torch:
            print(s.torch)
            self.names.append("PyTorch")
        if isinstance(s.tf32, dict):
            print("TF32 (as each library reports it): " + ", ".join(
                f"{k} {v}" for k, v in s.tf32.items()))
        else:
            print("TF32: not applicable on the CPU (float32 products are plain float32)")
        self.results.update(device=s.device, blas=s.blas, cache_cols=f"{s.cached}/{s.convs}",
                            check_finite=s.check_finite, winograd_layers=f"{s.winograd}/{s.convs}",
                            tf32=s.tf32)
        if s.torch:
            self.results["torch"] = s.torch

    def agreement(self, numbers, lines):
        """``torch_twin.check_outputs``'s numbers and lines."""
        print("\n".join(lines))
        self.results["check"] = numbers

    def _row(self, label, values, fmt, ratio=None):
        line = f"{label:24s}" + "".join(f"{fmt(v):>14s}" for v in values)
        if ratio is not None:
            line += f"{ratio:>9.2f}"
        print(line)

    def speed(self, times, memory=None):
        """The table: step time, images/s and peak memory (a ``bench_measure.Memory``, or None
        with --no-memory) per framework, and tinyalexnet / PyTorch where both ran."""
        names, pair = self.names, len(self.names) > 1
        med, ips = times.median, times.images_per_s
        self.results.update(other_load=times.other_load, step_seconds=med, images_per_s=ips,
                            step_seconds_all=times.seconds)
        print()
        print(f"{'':24s}{'tinyalexnet':>14s}" + (f"{'PyTorch':>14s}{'ratio':>9s}" if pair else ""))
        self._row("step time (median)", [med[n] for n in names], lambda v: f"{v * 1000:.1f} ms")
        ratio = ips["tinyalexnet"] / ips["PyTorch"] if pair else None
        self._row("images/s", [ips[n] for n in names], lambda v: f"{v:.1f}", ratio)
        if pair:
            self.results["ratio_images_per_s"] = ratio
        if memory is not None:
            peaks = [memory.peak[n] for n in names]
            mem_ratio = (peaks[0] / peaks[1]) if pair and None not in peaks else None
            self._row(f"peak memory ({memory.where})", peaks, _mib, mem_ratio)
            if memory.reserved:
                self._row("memory reserved", [memory.reserved[n] for n in names], _mib)
            self.results["peak_memory_bytes"] = dict(zip(names, peaks))
            if mem_ratio is not None:
                self.results["ratio_peak_memory"] = mem_ratio
        if pair:
            print("ratio = tinyalexnet / PyTorch (images/s: above 1 is faster; memory: below 1 is less)")
        if times.other_load is not None:
            print(load_line(times.other_load))

    def layers(self, t):
        """The time of each layer's forward and backward pass (a ``bench_measure.LayerTimes``)."""
        rows = t.rows
        total = sum(f + b for _, _, f, b in rows)
        print(f"\ntime per layer, tinyalexnet (median of {t.steps} instrumented steps)")
        if t.other_load is not None:
            print(load_line(t.other_load))
        print(f"{'layer':12s}{'type':22s}{'forward ms':>12s}{'backward ms':>13s}{'share':>8s}")
        for name, kind, f, b in rows:
            print(f"{name:12s}{kind:22s}{f * 1000:12.2f}{b * 1000:13.2f}"
                  f"{100 * (f + b) / total:7.1f}%")
        print(f"{'total':34s}{sum(r[2] for r in rows) * 1000:12.2f}"
              f"{sum(r[3] for r in rows) * 1000:13.2f}")
        self.results["layers"] = [{"layer": n, "type": k, "forward_s": f, "backward_s": b}
                                  for n, k, f, b in rows]

    def write_json(self, path):
        """Every number printed, as JSON in ``path`` (nothing without a path)."""
        if path:
            write_text_atomic(path, json.dumps(self.results, indent=1))
