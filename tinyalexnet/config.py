"""What defines a training run: ``TrainConfig``, the recipes, and the checks.

    config = make_config("paper", epochs=10)     # a recipe, then options
    config = make_config(lr=3e-4)                # the default recipe, one change

A recipe is a named set of settings taken from a source (the paper, a
published comparison); options given by hand override it.  Every value is
checked before anything is loaded (``check_config``, against the ranges of
``settings.py``): a wrong one is a one-line error naming the command-line
option.  The config is stored in every
checkpoint, so a resumed run is the same run.
"""
import dataclasses
import os

from . import backend
from .errors import ConfigError, TinyAlexNetError
from .models import MODELS, model_name
from .settings import RANGES

RECIPES = {
    # The no-argument run: the small model on the embedded Fashion-MNIST subset,
    # a few minutes on two CPU cores.  Adam needs no learning-rate tuning.
    "default": dict(model="alexnet_small", optimizer="adam", lr=1e-3, batch_size=64, epochs=6,
                    schedule="none", weight_decay=0.0, augment=False, lighting=False),
    # The paper, section 5: SGD with momentum 0.9 and weight decay 0.0005, batch 128,
    # lr 0.01 divided by 10 when the validation error stops improving (three times),
    # weights from N(0, 0.01^2), random crops with reflections and PCA lighting.
    "paper": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0005, batch_size=128,
                  epochs=90, schedule="plateau", patience=1, max_reductions=3, init="paper",
                  augment=True, lighting=True),
    # A published PyTorch/TensorFlow comparison of AlexNet on CIFAR-10 trained with
    # Adam, lr 0.001, batch 64, 15 epochs, no augmentation (alexnet32 is its network).
    "adam15": dict(optimizer="adam", lr=1e-3, batch_size=64, epochs=15, schedule="none",
                   weight_decay=0.0, augment=False, lighting=False),
}

# Names earlier versions stored in checkpoints; such runs still resume.
RECIPE_ALIASES = {"seed003": "adam15"}

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "step", "plateau")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint."""
    recipe: str = "default"
    dataset: str = "fashion-mnist-subset"
    data_dir: str = None
    download: bool = False
    model: str = "alexnet_small"
    init: str = None             # "paper" or "he"; None: the model's own default
    backend: str = "numpy"
    epochs: int = 6
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9        # SGD only
    weight_decay: float = 0.0
    schedule: str = "none"       # "none", "step" (/10 every step_size epochs), "plateau"
    step_size: int = 30
    patience: int = 1            # plateau: epochs without improvement before dividing
    max_reductions: int = 3      # plateau: the paper divided three times (None: no limit)
    augment: bool = False        # random crops + horizontal reflections
    lighting: bool = False       # PCA colour noise (colour data sets only)
    val_fraction: float = 0.1    # held out of the training set; 0: validate on the test set
    limit: int = None            # use at most this many images of each split (quick runs)
    seed: int = 0
    log_every: int = 50          # steps between reads of the running numbers on a GPU
    eval_batch_size: int = 256
    cuda_graph: bool = False     # replay each step as CUDA graphs (graph.py); off until measured


def make_config(recipe=None, **options):
    """A TrainConfig: the defaults, then ``recipe``'s settings, then ``options`` (None = unset)."""
    recipe = recipe_name(recipe) or "default"
    if recipe not in RECIPES:
        raise TinyAlexNetError(f"unknown recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    values = dict(RECIPES[recipe], recipe=recipe)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in options.items():
        if key not in fields:
            raise TypeError(f"make_config: unknown option {key!r}")
        if value is not None:
            values[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    config = TrainConfig(**values)
    config.model = model_name(config.model)
    check_config(config)
    return config


def recipe_name(name):
    """Today's name of a recipe (``name`` itself unless an earlier version called it so)."""
    return RECIPE_ALIASES.get(name, name) if isinstance(name, str) else name


def config_from_dict(values):
    """The TrainConfig a checkpoint stored (``dataclasses.asdict``), with today's names
    for a recipe or model an earlier version called otherwise; not yet checked."""
    config = TrainConfig(**values)
    config.recipe = recipe_name(config.recipe)
    config.model = model_name(config.model)
    return config


def check_config(c):
    """Raise a one-line ConfigError for a value that cannot work.

    Names and switches are checked here; every number against its range in
    ``settings.RANGES``, the table the layers and optimizers read too.
    """
    def bad(option, expected, got):
        raise ConfigError(f"invalid --{option.replace('_', '-')} {got!r}: expected {expected}")

    for name in ("recipe", "dataset", "model", "backend", "optimizer", "schedule"):
        if not isinstance(getattr(c, name), str):
            bad(name, "a name", getattr(c, name))
    if c.data_dir is not None and not isinstance(c.data_dir, str):
        bad("data_dir", "a folder", c.data_dir)
    for name in ("download", "augment", "lighting", "cuda_graph"):
        if not isinstance(getattr(c, name), bool):
            bad(name, "true or false", getattr(c, name))
    if c.model not in MODELS:
        bad("model", f"one of {', '.join(MODELS)}", c.model)
    if c.backend not in backend.BACKENDS:
        bad("backend", f"one of {', '.join(backend.BACKENDS)}", c.backend)
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", f"one of {', '.join(OPTIMIZERS)}", c.optimizer)
    if c.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}", c.schedule)
    if c.init not in (None, "paper", "he"):
        bad("init", "'paper' or 'he'", c.init)
    for field in dataclasses.fields(c):
        allowed = RANGES.get(field.name)
        value = getattr(c, field.name)
        if allowed is not None and not allowed.allows(value):
            bad(field.name, allowed.rule, value)
