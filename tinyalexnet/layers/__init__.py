"""The layers of AlexNet, each with a hand-written forward and backward pass.

One concept per file: ``conv.py`` (with ``im2col.py``), ``relu.py`` (and ``tanh.py``, the
saturating unit it replaced), ``lrn.py``,
``pool.py``, ``dropout.py``, ``linear.py``, ``flatten.py``, ``padding.py``,
``loss.py``; ``module.py`` is what they share and ``sequential.py`` chains them.
``naive.py`` holds slow, obviously correct loop versions that the tests (and
lesson 3) check the fast ones against.  ``winograd.py`` is Winograd's F(2x2, 3x3)
convolution, which Conv2d can run for 3x3 stride-1 layers (lesson 13).
"""
from .module import Module
from .conv import Conv2d
from .relu import ReLU
from .tanh import Tanh
from .lrn import LocalResponseNorm
from .pool import MaxPool2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .padding import ZeroPad2d
from .loss import SoftmaxCrossEntropy
from .sequential import Sequential

__all__ = ["Module", "Conv2d", "ReLU", "Tanh", "LocalResponseNorm", "MaxPool2d", "Dropout", "Flatten",
           "Linear", "ZeroPad2d", "SoftmaxCrossEntropy", "Sequential"]
