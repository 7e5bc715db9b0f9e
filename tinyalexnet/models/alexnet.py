"""AlexNet, and two smaller networks of the same shape.

``alexnet``: the paper's network (Krizhevsky, Sutskever, Hinton, 2012), 227x227x3
input.  The paper split every layer across two GPUs; conv2, conv4 and conv5
only saw the half of the previous layer on their own GPU.  ``groups=2`` gives
exactly that connectivity on one device, hence the paper's 60,965,224
parameters (62,378,344 without the split)::

    conv1 96 11x11/4        55x55  ReLU LRN maxpool 3/2 -> 27x27
    conv2 256 5x5 pad 2 g2  27x27  ReLU LRN maxpool 3/2 -> 13x13
    conv3 384 3x3 pad 1     13x13  ReLU
    conv4 384 3x3 pad 1 g2  13x13  ReLU
    conv5 256 3x3 pad 1 g2  13x13  ReLU maxpool 3/2 -> 6x6
    fc6 9216 -> 4096 ReLU dropout 0.5
    fc7 4096 -> 4096 ReLU dropout 0.5
    fc8 4096 -> num_classes        (softmax is in the loss)

``alexnet32``: the AlexNet for 32x32 images of a published PyTorch/TensorFlow
CIFAR-10 comparison (4,539,786 parameters at 10 classes): conv1 loses its
stride, a zero border keeps the pools' arithmetic, and the dense layers shrink
to 512.

``alexnet_small``: AlexNet in miniature for the CPU lessons: every idea of the
paper (five convs with ReLU, LRN after conv1 and conv2, overlapping pools,
groups=2 in conv2/4/5, three dense layers with dropout) at about 1/12 of the
multiply-adds of ``alexnet32`` (14.5 M per image against 184 M), so it trains in
minutes on two CPU cores.

Every builder takes ``in_channels`` (1 for grey images), ``init`` ("paper" or
"he", see ``tinyalexnet.init``) and a ``seed`` that fixes the weights and the
dropout masks.  The layers are built with ``draw=False`` (zero weights), and
``init_model`` then draws every weight once, from the seed: drawing in each
layer as well would double the time to build ``alexnet`` for nothing.
"""
from .. import init as initialisation
from ..layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                      Sequential, ZeroPad2d)

# The side of each network's square input, the one place it is written: the
# builders below take it from here, and the trainer reads it before a model is
# built (image folders are decoded straight to the size the crops are cut from).
INPUT_SIDE = {"alexnet": 227, "alexnet32": 32, "alexnet_small": 32}


def _build(name, layers, in_channels, init, seed):
    model = Sequential(layers)
    side = INPUT_SIDE[name]
    model.input_shape = (in_channels, side, side)     # (C, H, W) of one image
    for k, (name, layer) in enumerate(layers):
        if isinstance(layer, Dropout):
            layer.seed = seed * 1000 + k     # a distinct mask stream per layer
    model["conv1"].input_grad = False        # nothing upstream of conv1 needs dx
    return initialisation.init_model(model, init, seed)


def alexnet(num_classes=1000, in_channels=3, init="paper", seed=0):
    """The paper's AlexNet for 227x227 inputs (60,965,224 parameters at 1000 classes)."""
    layers = [
        ("conv1", Conv2d(in_channels, 96, 11, stride=4, draw=False)), ("relu1", ReLU()),
        ("norm1", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool1", MaxPool2d(3, 2)),
        ("conv2", Conv2d(96, 256, 5, padding=2, groups=2, draw=False)), ("relu2", ReLU()),
        ("norm2", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool2", MaxPool2d(3, 2)),
        ("conv3", Conv2d(256, 384, 3, padding=1, draw=False)), ("relu3", ReLU()),
        ("conv4", Conv2d(384, 384, 3, padding=1, groups=2, draw=False)), ("relu4", ReLU()),
        ("conv5", Conv2d(384, 256, 3, padding=1, groups=2, draw=False)), ("relu5", ReLU()),
        ("pool5", MaxPool2d(3, 2)),
        ("flatten", Flatten()),
        ("fc6", Linear(256 * 6 * 6, 4096, draw=False)), ("relu6", ReLU()), ("drop6", Dropout(0.5)),
        ("fc7", Linear(4096, 4096, draw=False)), ("relu7", ReLU()), ("drop7", Dropout(0.5)),
        ("fc8", Linear(4096, num_classes, draw=False)),
    ]
    return _build("alexnet", layers, in_channels, init, seed)


def alexnet32(num_classes=10, in_channels=3, init="he", seed=0):
    """AlexNet for 32x32 inputs, as in a published CIFAR-10 comparison (4,539,786 parameters)."""
    layers = [
        ("conv1", Conv2d(in_channels, 96, 11, draw=False)), ("relu1", ReLU()),     # 32 -> 22
        ("pad1", ZeroPad2d(2)), ("pool1", MaxPool2d(3, 2)),           # 26 -> 12
        ("conv2", Conv2d(96, 256, 5, padding=2, draw=False)), ("relu2", ReLU()),
        ("pool2", MaxPool2d(3, 2)),                                   # 12 -> 5
        ("conv3", Conv2d(256, 384, 3, padding=1, draw=False)), ("relu3", ReLU()),
        ("conv4", Conv2d(384, 384, 3, padding=1, draw=False)), ("relu4", ReLU()),
        ("conv5", Conv2d(384, 256, 3, padding=1, draw=False)), ("relu5", ReLU()),
        ("pool5", MaxPool2d(3, 2)),                                   # 5 -> 2
        ("flatten", Flatten()),
        ("fc6", Linear(256 * 2 * 2, 512, draw=False)), ("relu6", ReLU()), ("drop6", Dropout(0.5)),
        ("fc7", Linear(512, 512, draw=False)), ("relu7", ReLU()), ("drop7", Dropout(0.5)),
        ("fc8", Linear(512, num_classes, draw=False)),
    ]
    return _build("alexnet32", layers, in_channels, init, seed)


def alexnet_small(num_classes=10, in_channels=3, init="he", seed=0):
    """AlexNet in miniature for 32x32 inputs: the same layer pattern, 0.37 M parameters."""
    layers = [
        ("conv1", Conv2d(in_channels, 32, 5, padding=2, draw=False)), ("relu1", ReLU()),  # 32
        ("norm1", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool1", MaxPool2d(3, 2)),  # 15
        ("conv2", Conv2d(32, 64, 5, padding=2, groups=2, draw=False)), ("relu2", ReLU()),
        ("norm2", LocalResponseNorm(5, 1e-4, 0.75, 2.0)), ("pool2", MaxPool2d(3, 2)),  # 7
        ("conv3", Conv2d(64, 96, 3, padding=1, draw=False)), ("relu3", ReLU()),
        ("conv4", Conv2d(96, 96, 3, padding=1, groups=2, draw=False)), ("relu4", ReLU()),
        ("conv5", Conv2d(96, 64, 3, padding=1, groups=2, draw=False)), ("relu5", ReLU()),
        ("pool5", MaxPool2d(3, 2)),                                           # 3
        ("flatten", Flatten()),
        ("fc6", Linear(64 * 3 * 3, 256, draw=False)), ("relu6", ReLU()), ("drop6", Dropout(0.5)),
        ("fc7", Linear(256, 256, draw=False)), ("relu7", ReLU()), ("drop7", Dropout(0.5)),
        ("fc8", Linear(256, num_classes, draw=False)),
    ]
    return _build("alexnet_small", layers, in_channels, init, seed)
