"""How long each lesson notebook takes, as the lesson test runs it; optionally beside another checkout.

    python scripts/lesson_times.py                          # every lesson of this checkout
    python scripts/lesson_times.py 08 09                    # lessons 08 and 09
    python scripts/lesson_times.py --against ../before 08   # this checkout and another, side by side

Each notebook runs top to bottom with nbclient, the reference solutions in its exercise cells,
strict mode and one BLAS thread, as ``tests/test_lessons.py`` runs it. Two times are printed:
the wall-clock time, and the kernel's own CPU time (user + system, read from inside the kernel
at the end), which other programs on a shared machine change much less. With ``--against``,
each lesson runs in both checkouts one after the other, alternating which goes first, so that
a change in the machine's load falls on both.
"""
import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_CELL = ("import resource as _r\n_u = _r.getrusage(_r.RUSAGE_SELF)\n"
            "print('KERNEL-CPU-SECONDS', _u.ru_utime + _u.ru_stime)")


def _solutions(root):
    """fill_solutions of the tinyalexnet in ``root`` (each checkout has its own solutions)."""
    for name in [m for m in sys.modules if m == "tinyalexnet" or m.startswith("tinyalexnet.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        from tinyalexnet.exercises.notebooks import fill_solutions
    finally:
        sys.path.pop(0)
    return fill_solutions


def run(root, prefix):
    """(wall seconds, kernel CPU seconds, "ok" or the error) for lesson ``prefix`` in ``root``."""
    import nbclient
    import nbformat
    path = next((root / "lessons").glob(prefix + "_*.ipynb"))
    nb = _solutions(root)(nbformat.read(path, as_version=4))
    nb.cells.append(nbformat.v4.new_code_cell(CPU_CELL))
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(root / "lessons")}})
    start, status = time.perf_counter(), "ok"
    try:
        client.execute()
    except Exception as err:                      # the notebook failed: say where, keep going
        status = "error: " + (str(err).strip().splitlines() or ["?"])[-1][:120]
    wall = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", [])
                   if o.get("output_type") == "stream")
    cpu = float(text.split("KERNEL-CPU-SECONDS", 1)[1].split()[0]) if "KERNEL-CPU" in text else None
    return wall, cpu, status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 08 09 (default: all)")
    parser.add_argument("--against", type=Path, help="another checkout to time beside this one")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TINYALEXNET_STRICT_EXERCISES"] = "1"
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    lessons = args.lessons or sorted(p.name[:2] for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    roots = {"this": ROOT} if args.against is None else {"this": ROOT, "other": args.against.resolve()}
    totals = {name: [0.0, 0.0] for name in roots}
    for k, prefix in enumerate(lessons):
        order = list(roots) if k % 2 == 0 else list(reversed(roots))
        results = {name: run(roots[name], prefix) for name in order}
        parts = []
        for name in roots:
            wall, cpu, status = results[name]
            totals[name][0] += wall
            totals[name][1] += cpu or 0.0
            cpu_text = f"{cpu:7.1f}" if cpu is not None else "      ?"
            parts.append(f"{name}: wall {wall:7.1f} s, kernel CPU {cpu_text} s ({status})")
        print(f"{prefix}  " + "   ".join(parts) + f"   load {os.getloadavg()[0]:.1f}", flush=True)
    print("all " + "   ".join(f"{name}: wall {w:.0f} s, kernel CPU {c:.0f} s"
                              for name, (w, c) in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
