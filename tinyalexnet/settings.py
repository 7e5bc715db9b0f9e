"""The range of every number a user can set, declared once.

A setting reaches the code through four doors: the command line and a
``TrainConfig`` (``config.check_config``), a layer's constructor
(``Conv2d(3, 96, 11, stride=4)``), an optimizer's or a schedule's constructor
(``SGD(model, lr=0.01)``), and a checkpoint's metadata (the optimizer's numbers,
read back).  All four look the setting up in ``RANGES`` and check it with the
same rule, so a value is refused at every door or at none::

    check_setting("SGD", "momentum", 0.9)       # 0.9; a ConfigError for 1.5
    RANGES["momentum"].rule                      # 'a number in [0, 1)'

A number is a finite real that is not a bool (``True`` is a mistake, not 1;
NaN and infinity are never a setting); an integer is a whole number of the
same kind.  A check returns a plain Python int or float: a NumPy float64 would
turn float32 activations into float64, and a NumPy float32 cannot be written
to JSON.
"""
import dataclasses
import math
import numbers

from .errors import ConfigError


def is_real(value):
    """A real number (NaN and infinities included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_number(value):
    """A finite real number, not a bool."""
    return is_real(value) and math.isfinite(value)


def is_integer(value):
    """A whole number of an integer type (``3``, not ``3.0``), not a bool."""
    return is_real(value) and isinstance(value, numbers.Integral)


@dataclasses.dataclass(frozen=True)
class Range:
    """Where a setting may lie: its kind and its bounds (``minimum``/``maximum``
    allowed, ``above``/``below`` not), odd if asked, None if ``optional``."""
    kind: str = "number"             # "number" or "integer"
    minimum: float = None
    above: float = None
    below: float = None
    maximum: float = None
    odd: bool = False
    optional: bool = False           # None means "not set" (no limit, ...)
    text: str = None                 # the rule in words, where the bounds read badly

    def allows(self, value):
        if value is None:
            return self.optional
        if not (is_integer(value) if self.kind == "integer" else is_number(value)):
            return False
        return ((self.minimum is None or value >= self.minimum)
                and (self.above is None or value > self.above)
                and (self.below is None or value < self.below)
                and (self.maximum is None or value <= self.maximum)
                and (not self.odd or value % 2 == 1))

    @property
    def rule(self):
        """The rule in words: "a number in [0, 1)", "an odd integer >= 1", ..."""
        if self.text:
            return self.text
        noun = ("an odd integer" if self.odd else "an integer" if self.kind == INTEGER
                else "a number")
        low = (f"[{self.minimum}" if self.minimum is not None
               else f"({self.above}" if self.above is not None else None)
        high = (f"{self.maximum}]" if self.maximum is not None
                else f"{self.below})" if self.below is not None else None)
        if low and high:
            rule = f"{noun} in {low}, {high}"
        elif low:
            rule = f"{noun} {'>=' if self.minimum is not None else '>'} {low[1:]}"
        elif high:
            rule = f"{noun} {'<=' if self.maximum is not None else '<'} {high[:-1]}"
        else:
            rule = noun
        return rule + (" (or None)" if self.optional else "")


NUMBER, INTEGER = "number", "integer"
AT_LEAST_ONE = Range(INTEGER, minimum=1)

RANGES = {
    # --------------------------------------------------------------- optimisation
    # A step of 0 learns nothing and a negative one climbs the loss; an infinite one
    # makes every weight NaN at the first update.  No upper bound: a rate far too
    # high is a real experiment (it diverges, and training says so).
    "lr": Range(NUMBER, above=0),
    # v <- m v + ...: at m = 1 the velocity never forgets a gradient, above 1 it grows
    # without bound.  0 is plain gradient descent.
    "momentum": Range(NUMBER, minimum=0, below=1),
    # The L2 coefficient: the loss gains wd/2 |w|^2.  Below 1.  At 1 or more the
    # penalty outweighs what the data say for any network here (the paper used
    # 0.0005; published values for such networks stay below 0.01), so such a value is
    # a slip (5 for 5e-4), and training would only shrink every weight towards 0.
    # SGD's and Adam's own rules would run with it, so they are held to the same range.
    "weight_decay": Range(NUMBER, minimum=0, below=1),
    # Adam's running means: a decay of 1 would never move from its start, 0 keeps
    # only the current gradient.
    "beta1": Range(NUMBER, minimum=0, below=1),
    "beta2": Range(NUMBER, minimum=0, below=1),
    "eps": Range(NUMBER, above=0),               # 0 divides by 0 where a gradient is 0
    # ------------------------------------------------------------- schedules
    "gamma": Range(NUMBER, above=0, maximum=1),  # StepLR's factor: 1 keeps the rate
    "factor": Range(NUMBER, above=0, below=1),   # ReduceLROnPlateau's: 1 would never reduce
    "threshold": Range(NUMBER, minimum=0, below=1),    # a relative improvement
    "step_size": AT_LEAST_ONE,                   # epochs between StepLR's reductions
    "patience": Range(INTEGER, minimum=0),       # epochs without improvement tolerated
    "max_reductions": Range(INTEGER, minimum=0, optional=True),   # None: no limit
    # ------------------------------------------------------------- the run
    "epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "eval_batch_size": AT_LEAST_ONE,
    "log_every": AT_LEAST_ONE,
    # A validation split needs at least one image on each side.
    "limit": Range(INTEGER, minimum=2, optional=True, text="an integer of at least 2"),
    # Held out of the training set; 1 would leave nothing to train on.
    "val_fraction": Range(NUMBER, minimum=0, below=1),
    # NumPy's SeedSequence takes non-negative integers; 63 bits keep a seed an int64
    # everywhere it is stored.
    "seed": Range(INTEGER, minimum=0, maximum=2 ** 63 - 1,
                  text="an integer from 0 to 2**63 - 1"),
    # ------------------------------------------------------------- layers
    "in_channels": AT_LEAST_ONE,
    "out_channels": AT_LEAST_ONE,
    "in_features": AT_LEAST_ONE,
    "out_features": AT_LEAST_ONE,
    "kernel_size": AT_LEAST_ONE,
    "stride": AT_LEAST_ONE,
    "groups": AT_LEAST_ONE,
    "padding": Range(INTEGER, minimum=0),
    "p": Range(NUMBER, minimum=0, below=1),      # dropout: p = 1 would drop every unit
    # LRN: the window is centred on its channel, so its size is odd.
    "size": Range(INTEGER, minimum=1, odd=True),
    "alpha": Range(NUMBER, minimum=0),
    "beta": Range(NUMBER, minimum=0),
    # k > 0: with k = 0 a pixel where all the window's channels are 0 (common after
    # ReLU) would divide 0 by 0.
    "k": Range(NUMBER, above=0),
    "num_features": AT_LEAST_ONE,
    # A setting that means something else in one class is declared as "Class.name".
    # BatchNorm's momentum is the weight of each new batch in the running averages
    # (PyTorch's meaning): 1 keeps the last batch alone, 0 never updates them.
    "BatchNorm2d.momentum": Range(NUMBER, minimum=0, maximum=1),
}


def check_setting(owner, name, value):
    """``value`` as a plain int or float if it lies in ``RANGES[name]``; else a one-line
    ConfigError naming ``owner`` (a layer, an optimizer) and the setting.

    So ``Conv2d(3, 8, 0)`` fails when it is built, not as a ZeroDivisionError deep
    inside the first forward.
    """
    allowed = RANGES.get(f"{owner}.{name}") or range_of(name)
    if not allowed.allows(value):
        raise ConfigError(f"{owner}: {name} must be {allowed.rule}, got {value!r}")
    if value is None:
        return None
    return int(value) if allowed.kind == INTEGER else float(value)


def range_of(name):
    """The Range declared for setting ``name``."""
    try:
        return RANGES[name]
    except KeyError:
        raise LookupError(f"no range is declared for the setting {name!r}: add it to "
                          f"tinyalexnet/settings.py's RANGES") from None
