"""Learning-rate schedules, stepped once per epoch.

``ReduceLROnPlateau`` is the paper's rule: "divide the learning rate by 10 when
the validation error rate stopped improving with the current learning rate";
it was reduced three times before training stopped.  ``StepLR`` divides on a
fixed timetable instead (every ``step_size`` epochs).
"""
from ..errors import ConfigError


def _check(owner, what, value, ok, expected):
    if not ok(value):
        raise ConfigError(f"{owner}: {what} must be {expected}, got {value!r}")


class StepLR:
    def __init__(self, optimizer, step_size, gamma=0.1):
        _check("StepLR", "step_size", step_size, lambda v: isinstance(v, int) and v >= 1,
               "an integer >= 1")
        _check("StepLR", "gamma", gamma, lambda v: 0 < v <= 1, "in (0, 1]")
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.epoch = 0

    def step(self, metric=None):
        self.epoch += 1
        if self.epoch % self.step_size == 0:
            self.optimizer.lr *= self.gamma

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, sd):
        self.epoch = int(sd["epoch"])


class ReduceLROnPlateau:
    """Multiply lr by ``factor`` after ``patience`` epochs without a new best ``metric``.

    ``metric`` is minimised (pass a validation error or loss).  An improvement
    must beat the best by ``threshold`` (relative).  At most ``max_reductions``
    reductions (3 in the paper; None for no limit).
    """

    def __init__(self, optimizer, factor=0.1, patience=1, threshold=1e-3, max_reductions=None):
        _check("ReduceLROnPlateau", "factor", factor, lambda v: 0 < v < 1, "in (0, 1)")
        _check("ReduceLROnPlateau", "patience", patience, lambda v: isinstance(v, int) and v >= 0,
               "an integer >= 0")
        _check("ReduceLROnPlateau", "threshold", threshold, lambda v: 0 <= v < 1, "in [0, 1)")
        _check("ReduceLROnPlateau", "max_reductions", max_reductions,
               lambda v: v is None or (isinstance(v, int) and v >= 0), "None or an integer >= 0")
        self.optimizer, self.factor, self.patience = optimizer, factor, patience
        self.threshold, self.max_reductions = threshold, max_reductions
        self.best = float("inf")
        self.bad_epochs = 0
        self.reductions = 0

    def step(self, metric):
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience and (
                self.max_reductions is None or self.reductions < self.max_reductions):
            self.optimizer.lr *= self.factor
            self.reductions += 1
            self.bad_epochs = 0

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, sd):
        self.best = float(sd["best"])
        self.bad_epochs, self.reductions = int(sd["bad_epochs"]), int(sd["reductions"])
