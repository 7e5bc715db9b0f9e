"""``python -m tinyalexnet.exercises solve|strip``: see ``notebooks.py``."""
import argparse
import sys


def main(argv=None):
    import nbformat   # a lesson requirement, not a package one: imported only here

    from .notebooks import fill_solutions, strip_outputs

    parser = argparse.ArgumentParser(prog="python -m tinyalexnet.exercises",
                                     description="Tools for the lesson notebooks' exercises.")
    sub = parser.add_subparsers(dest="command", required=True)
    solve = sub.add_parser("solve", help="write a copy of a notebook with the reference "
                           "solutions in its exercise cells")
    solve.add_argument("notebook")
    solve.add_argument("output")
    strip = sub.add_parser("strip", help="remove all outputs from notebooks, in place")
    strip.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "solve":
        nb = fill_solutions(nbformat.read(args.notebook, as_version=4))
        nbformat.write(nb, args.output)
        print(f"wrote {args.output}")
    else:
        for path in args.notebooks:
            nbformat.write(strip_outputs(nbformat.read(path, as_version=4)), path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
