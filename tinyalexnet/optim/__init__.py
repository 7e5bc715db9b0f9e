"""Optimizers (``SGD`` with the paper's update rule, ``Adam``) and learning-rate schedules."""
from .adam import Adam
from .optimizer import Optimizer
from .schedulers import ReduceLROnPlateau, StepLR
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "ReduceLROnPlateau"]
