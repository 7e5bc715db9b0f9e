"""The networks: the paper's AlexNet and two smaller ones of the same design.

``get_model(name, ...)`` builds one by its name, which is also the name of its
builder function and the ``--model`` of the command line.
"""
from ..errors import ConfigError
from .alexnet import INPUT_SIDE, alexnet, alexnet32, alexnet_small

MODELS = {
    "alexnet_small": alexnet_small,   # 32x32, minutes on a laptop CPU (the lessons' model)
    "alexnet32": alexnet32,           # 32x32, the network of a published CIFAR-10 comparison
    "alexnet": alexnet,               # 227x227, the paper's network
}

# Names earlier versions used (on the command line and in checkpoints); still accepted.
MODEL_ALIASES = {"small": "alexnet_small"}


def model_name(name):
    """Today's name of a model: ``name`` itself, unless it is an earlier name of one."""
    return MODEL_ALIASES.get(name, name) if isinstance(name, str) else name


def get_model(name, num_classes=10, in_channels=3, init=None, seed=0):
    """Build a model by name; ``init=None`` picks "paper" for alexnet and "he" otherwise."""
    name = model_name(name)
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    kwargs = {} if init is None else {"init": init}
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, seed=seed, **kwargs)


__all__ = ["alexnet", "alexnet32", "alexnet_small", "get_model", "model_name", "MODELS",
           "MODEL_ALIASES", "INPUT_SIDE"]
