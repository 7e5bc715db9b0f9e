"""The networks: the paper's AlexNet and two smaller ones of the same design.

``get_model(name, ...)`` builds one by the name the command line uses.
"""
from ..errors import ConfigError
from .alexnet import alexnet, alexnet32, alexnet_small

MODELS = {
    "small": alexnet_small,   # 32x32, minutes on a laptop CPU (the lessons' model)
    "alexnet32": alexnet32,   # 32x32, seed 003's CIFAR-10 network
    "alexnet": alexnet,       # 227x227, the paper's network
}


def get_model(name, num_classes=10, in_channels=3, init=None, seed=0):
    """Build a model by name; ``init=None`` picks "paper" for alexnet and "he" otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    kwargs = {} if init is None else {"init": init}
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, seed=seed, **kwargs)


__all__ = ["alexnet", "alexnet32", "alexnet_small", "get_model", "MODELS"]
