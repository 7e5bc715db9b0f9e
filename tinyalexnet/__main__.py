"""``python -m tinyalexnet``: the command line (see ``tinyalexnet.cli``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
