"""``python -m tinyalexnet``: the command line (see ``tinyalexnet.cli``)."""
import sys

from . import signals

if __name__ == "__main__":
    # Loading NumPy and matplotlib takes a moment; Ctrl-C or SIGTERM then ends
    # the command with one line and the usual exit status, not a traceback.
    signals.raise_on_sigterm()
    try:
        from .cli import main
    except KeyboardInterrupt as stop:
        print("interrupted during start-up", file=sys.stderr)
        sys.exit(signals.exit_code(stop))
    sys.exit(main())
