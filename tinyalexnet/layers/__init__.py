"""The layers of AlexNet, each with a hand-written forward and backward pass.

``functional.py`` holds the maths: one forward and one backward function per
layer, written to be read, with the shapes, the equation and the backward
formula in each docstring (they are also the lessons' reference solutions).
Each layer class is a thin stateful wrapper around them, one concept per file:
``conv.py`` (with ``im2col.py``), ``relu.py`` (and ``tanh.py``, the saturating
unit it replaced), ``lrn.py`` (and ``batchnorm.py``, what replaced it later),
``pool.py``, ``dropout.py``, ``linear.py``,
``flatten.py``, ``padding.py``, ``loss.py``.  A class holds the parameters and
their gradients, checks its settings and inputs, and keeps what backward needs.
``module.py`` is what they share and ``sequential.py`` chains them.

``fast.py`` holds the optimised versions of the layers' maths (batch-last
im2col for Conv2d, a one-byte arg-max for MaxPool2d, LRN's backward in place;
on a GPU one CUDA kernel per pass from ``tinyalexnet/kernels/`` for ReLU,
Dropout, LRN, MaxPool2d, col2im and the loss); those layers run them by default
and the readable functions with ``layer.fast = False``
(``model.set_fast(False)`` for a whole model).
``winograd.py`` is Winograd's F(2x2, 3x3) convolution, which Conv2d runs for 3x3
stride-1 layers with ``layer.use_winograd = True`` (lesson 13).
``naive.py`` holds slow, obviously correct loop versions that the tests (and
lesson 3) check both against.
"""
from .module import Module
from .conv import Conv2d
from .relu import ReLU
from .tanh import Tanh
from .lrn import LocalResponseNorm
from .batchnorm import BatchNorm2d
from .pool import MaxPool2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .padding import ZeroPad2d
from .loss import SoftmaxCrossEntropy
from .sequential import Sequential

__all__ = ["Module", "Conv2d", "ReLU", "Tanh", "LocalResponseNorm", "BatchNorm2d", "MaxPool2d",
           "Dropout", "Flatten", "Linear", "ZeroPad2d", "SoftmaxCrossEntropy", "Sequential"]
