"""Learning-rate schedules, stepped once per epoch.

``ReduceLROnPlateau`` is the paper's rule: "divide the learning rate by 10 when
the validation error rate stopped improving with the current learning rate";
it was reduced three times before training stopped.  ``StepLR`` divides on a
fixed timetable instead (every ``step_size`` epochs).
"""
from ..settings import check_setting


class StepLR:
    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer = optimizer
        self.step_size = check_setting("StepLR", "step_size", step_size)
        self.gamma = check_setting("StepLR", "gamma", gamma)
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
        name = "ReduceLROnPlateau"
        self.optimizer = optimizer
        self.factor = check_setting(name, "factor", factor)
        self.patience = check_setting(name, "patience", patience)
        self.threshold = check_setting(name, "threshold", threshold)
        self.max_reductions = check_setting(name, "max_reductions", max_reductions)
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
