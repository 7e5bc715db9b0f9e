"""The command line: ``python -m tinyalexnet COMMAND ...``.

    train      train a model (no arguments: alexnet_small on the embedded data, CPU)
    evaluate   top-1/top-5 error of a checkpoint on a test set, confusion matrix
    predict    the top-5 classes of image files
    info       a model's layer table: shapes, parameters, multiply-adds
    bench      time training steps, optionally beside PyTorch
    check      does this backend work? (run it after installing CuPy)
    prepare    decode an image folder once into a store that train reads

Each command is a pair of functions, ``add_<command>_arguments(parser)`` and
``run_<command>(args) -> exit code``, listed in ``COMMANDS``.

Mistakes a user can make (a missing data set, a bad option value, a damaged
checkpoint, a file that is not an image) print one line, ``error: ...``, and
exit with code 2.  Ctrl-C (SIGINT), SIGTERM or SIGHUP (a closed terminal)
during training saves and exits with 130, 143 or 129 (see ``signals``).  An
output that stops taking lines (``| head``, a full disk) never stops a command
(see ``streams``).  Anything else is a bug and keeps its traceback.
"""
import argparse
import dataclasses
import json
import math
import os
import sys

from . import (__version__, backend, bench, check, checkpoint, errors, plots, runfolder, signals,
               streams)
from .backend import numpy as np
from .config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig, make_config, recipe_name
from .datasets import load_dataset, prepare
from .datasets.folder import (check_image_file, image_file_error, load_image_files,
                              not_a_regular_file)
from .datasets.split import limit_dataset
from .errors import NonFiniteError, TinyAlexNetError
from .metrics import evaluate, log_softmax
from .models import MODELS, get_model, model_name
from .parallel.mpi import DEFAULT_TIMEOUT, ParallelError, RankTimeout
from .parallel.strategy import OneProcess
from .runfolder import write_text_atomic
from .stopping import Interrupted, interrupted_during_test
from .train import Trainer, dataset_options
from .transforms import Pipeline

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130   # the shell's code for a program stopped by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143    # ... and by SIGTERM (128 + 15)
EXIT_HANGUP = 129        # ... and by SIGHUP (128 + 1): the terminal or SSH session closed


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- train

TRAIN_HELP = ("train a model (no arguments: alexnet_small on the embedded Fashion-MNIST "
              "subset)")
# What may change when a run is resumed; everything else comes from its checkpoint.
RESUMABLE = ("epochs", "backend", "data_dir", "download", "lr")


def add_train_arguments(p):
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="fashion-mnist-subset (embedded, the default), "
                   "fashion-mnist, mnist, cifar10, folder, or store (made by prepare)")
    g.add_argument("--data-dir", help="where the data set's files are (or go with --download)")
    g.add_argument("--download", action="store_true", default=None,
                   help="download the data set if it is not found")
    g.add_argument("--limit", type=int, help="use at most N images of each split (quick runs)")
    g.add_argument("--val-fraction", type=float,
                   help=f"part of the training set held out for validation (default "
                        f"{d.val_fraction}; 0: validate on the test set)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crops and horizontal reflections")
    g.add_argument("--lighting", action=argparse.BooleanOptionalAction, default=None,
                   help="PCA colour noise (colour data sets)")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--recipe", type=recipe_name, choices=list(RECIPES),
                   help="preset settings: default (Adam 1e-3, batch 64, 6 epochs), paper (SGD "
                        "0.01, momentum 0.9, weight decay 5e-4, batch 128, lr /10 on plateau, "
                        "augmentation), adam15 (Adam 1e-3, batch 64, 15 epochs, no augmentation, "
                        "as in a published PyTorch/TensorFlow CIFAR-10 comparison); other "
                        "options override it")
    g.add_argument("--model", type=model_name, choices=list(MODELS),
                   help=f"network (default {d.model})")
    g.add_argument("--init", choices=["paper", "he"], help="weight initialisation")
    g.add_argument("--epochs", type=int, help="number of epochs (resume: train up to this many)")
    g.add_argument("--batch-size", type=int, help="images per step")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS))
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=list(SCHEDULES),
                   help="learning rate: none, step (/10 every --step-size epochs) or plateau "
                        "(/10 when the validation error stops improving, the paper's rule)")
    g.add_argument("--step-size", type=int)
    g.add_argument("--seed", type=int, help="fixes weights, data order, augmentation, dropout")
    g = p.add_argument_group("run")
    g.add_argument("--backend", choices=list(backend.BACKENDS),
                   help="numpy (CPU, the default) or cupy (CUDA GPU)")
    g.add_argument("--out", help="folder for checkpoints, history and plots "
                                 "(default runs/<model>-<dataset>-<n>); with --resume "
                                 "CHECKPOINT: a new run there that starts from it")
    g.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="continue the run in folder RUN (or from a checkpoint file; default "
                        "--out); --epochs, --lr, --backend and --data-dir may change")
    g.add_argument("--log-every", type=int,
                   help="steps between reads of the running loss on a GPU (default 50)")
    g.add_argument("--cuda-graph", action="store_true", default=None,
                   help="with --backend cupy: replay each training step as CUDA graphs "
                        "(fewer launches from Python; falls back to eager steps, saying why)")
    g.add_argument("--ten-crop", action="store_true",
                   help="score the final test with ten crops per image")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")
    g = add_parallel_arguments(p)
    g.add_argument("--model-parallel", type=int, metavar="2",
                   help="the paper's two towers on 2 processes (mpiexec -n 2): each holds half "
                        "of every layer, as the paper's two GPUs did (alexnet, alexnet_small)")


def add_parallel_arguments(p):
    g = p.add_argument_group("several processes (mpiexec -n N python -m tinyalexnet ...)")
    g.add_argument("--data-parallel", action="store_true",
                   help="split every batch over the N processes mpiexec started (one model "
                        "each, gradients averaged every step); needs pip install -e \".[mpi]\"")
    g.add_argument("--rank-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long a process waits for the others before it stops them all "
                        f"(default {DEFAULT_TIMEOUT:g})")
    return g


def start_parallel(args, backend_name="numpy"):
    """The DataParallel of ``--data-parallel``, or the ModelParallel of ``--model-parallel 2``
    (None without them): joins the processes mpiexec started (alone: one of one), each on
    its own GPU with ``--backend cupy``."""
    towers = getattr(args, "model_parallel", None)
    if towers is not None:
        if towers != 2:
            raise TinyAlexNetError(f"--model-parallel {towers}: the paper's towers are 2 "
                                   f"(--model-parallel 2, on mpiexec -n 2)")
        if args.data_parallel:
            raise TinyAlexNetError("--model-parallel 2 with --data-parallel: choose one (the "
                                   "hybrid of both is not built)")
    if not getattr(args, "data_parallel", False) and towers is None:
        return None
    from .parallel import DataParallel, mpi      # mpi4py is optional: imported when asked
    world = mpi.world(args.rank_timeout)
    args.world = world
    if backend_name == "cupy":
        backend.use_device(world.local_rank())
    if towers is not None:
        from .parallel.model_parallel import ModelParallel     # refuses other rank counts
        return ModelParallel(world)
    return DataParallel(world)


def _given(args, names):
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def run_train(args):
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "recipe"]
    options = _given(args, fields)
    parallel = start_parallel(args, options.get("backend", "numpy"))
    if args.resume is not None:
        run = args.resume or args.out
        if not run:
            raise TinyAlexNetError("--resume needs the run to continue: --resume RUN_FOLDER")
        refused = sorted(set(options) - set(RESUMABLE)) + (["recipe"] if args.recipe else [])
        if refused:
            raise TinyAlexNetError(
                f"--{refused[0].replace('_', '-')} cannot change when resuming: the run keeps "
                f"the settings in its checkpoint (only --epochs, --lr, --backend and "
                f"--data-dir can)")
        # --out beside --resume RUN: a new run in --out that starts from RUN's checkpoint.
        out = args.out if args.resume else None
        trainer = Trainer.resume(run, overrides=options, progress=args.progress, out_dir=out,
                                 parallel=parallel)
        args.started = True
        if not trainer.parallel.first:
            pass                          # rank 0 of several speaks for them
        elif trainer.epoch >= trainer.config.epochs:
            print(f"{trainer.out_dir}: all {trainer.config.epochs} epochs are done; "
                  f"pass --epochs N to train longer")
        else:
            print(f"resuming {trainer.out_dir} at epoch {trainer.epoch + 1}, after step "
                  f"{trainer.state.step} of {trainer.steps_per_epoch}")
    else:
        config = make_config(args.recipe, **options)
        trainer = Trainer(config, args.out, progress=args.progress, parallel=parallel)
        args.started = True
    if args.ten_crop and not trainer.config.augment and trainer.parallel.first:   # said now
        _warn_ten_crop_without_crops("this run trains")
    with trainer:                # the run folder is ours until the report is written
        trainer.fit()
        try:
            return _report_test(trainer, args.ten_crop)
        except KeyboardInterrupt as stop:    # the training is done and saved: say so
            raise interrupted_during_test(stop, trainer.path("last.npz"), args.ten_crop) from None


def _warn_ten_crop_without_crops(subject):
    print(f"warning: {subject} without random crops (no --augment): it sees only the centre "
          "view, so the corner crops --ten-crop averages in are new to it and usually raise "
          "the error; compare with the result without --ten-crop", file=sys.stderr)


def _report_test(trainer, ten_crop):
    result = trainer.evaluate(trainer.test_set, ten_crop=ten_crop)     # every process
    if not trainer.writes:
        return 0                          # rank 0 writes and prints the results
    confusion = result.pop("confusion")
    result.update(ten_crop=ten_crop, epochs=trainer.epoch, classes=trainer.classes,
                  confusion=confusion.tolist())
    write_text_atomic(trainer.path("test.json"), json.dumps(result, indent=1))
    plots.plot_confusion_matrix(confusion, trainer.classes, trainer.path("confusion_matrix.png"))
    print(f"test accuracy {100 * result['accuracy']:.2f}% (top-1 error "
          f"{100 * result['top1_error']:.2f}%, top-5 error {100 * result['top5_error']:.2f}%) on "
          f"{result['count']:,} test images after {trainer.epoch} "
          f"epoch{'s' if trainer.epoch != 1 else ''}"
          + (" with ten crops" if ten_crop else ""))
    print(f"checkpoint: {trainer.path('last.npz')} (best validation: {trainer.path('best.npz')})")
    print(f"plots: {trainer.path('history.png')}, {trainer.path('confusion_matrix.png')}; "
          f"history: {trainer.path('history.csv')}")
    return 0


# ----------------------------------------------------------------------------- evaluate

EVALUATE_HELP = "top-1/top-5 error of a checkpoint on a data set, and a confusion matrix"


def add_evaluate_arguments(p):
    p.add_argument("checkpoint", help="a .npz checkpoint (or a run folder: its last.npz)")
    p.add_argument("--dataset", help="data set (default: the one the model was trained on)")
    p.add_argument("--data-dir", help="where the data set's files are")
    p.add_argument("--download", action="store_true", help="download the data set if missing")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, help="use at most N images")
    p.add_argument("--ten-crop", action="store_true",
                   help="average the softmax over ten crops per image (the paper's test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backend", choices=list(backend.BACKENDS), default="numpy")
    p.add_argument("--plot", help="confusion matrix PNG (default: next to the checkpoint)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    add_parallel_arguments(p)


def run_evaluate(args):
    if args.batch_size < 1:
        raise TinyAlexNetError(f"invalid --batch-size {args.batch_size}: expected a positive "
                               "integer")
    if args.plot:
        plots.check_figure_path(args.plot)     # before the evaluation, not after it
    parallel = start_parallel(args, args.backend)
    first = parallel is None or parallel.first
    # On several processes, a setup error on one (a busy folder, a bad option) ends all of
    # them here, at once, instead of leaving the others waiting in the evaluation
    with (parallel or OneProcess()).together("opening the checkpoint and the data"):
        ck = checkpoint.load(args.checkpoint)
        model, pipeline = _model_and_pipeline(ck, args.backend)
        if args.ten_crop and not ck["pipeline"].get("augment") and first:
            _warn_ten_crop_without_crops(f"{ck.path} was trained")
        config = ck.get("config") or {}
        name = args.dataset or config.get("dataset")
        if name is None:
            raise TinyAlexNetError(f"{ck.path}: does not say which data set it was trained on; "
                                   "give --dataset")
        data_dir = args.data_dir if args.data_dir or args.dataset else config.get("data_dir")
        dataset = load_dataset(name, args.split, data_dir=data_dir, download=args.download,
                               **dataset_options(name, ck["input_shape"][1]))
        if args.limit is not None:
            if args.limit < 1:
                raise TinyAlexNetError(f"invalid --limit {args.limit}: expected a positive "
                                       "integer")
            dataset = limit_dataset(dataset, args.limit, seed=0)
        if len(dataset.classes) != ck["num_classes"] or dataset.channels != ck["in_channels"]:
            raise TinyAlexNetError(f"{name}: {len(dataset.classes)} classes of "
                                   f"{dataset.channels}-channel images, but {ck.describe()} "
                                   f"expects {ck['num_classes']} classes of "
                                   f"{ck['in_channels']}-channel images")
        checkpoint.check_classes(ck, dataset.classes, data_dir or name)
        stem = os.path.splitext(os.path.basename(ck.path))[0]
        plot = args.plot or os.path.join(os.path.dirname(ck.path) or ".",
                                         f"{stem}-{name}-{args.split}-confusion.png")
        if first:     # one process looks (two probing the folder's lock would see each other)
            _refuse_a_busy_run_folder(plot, args.plot)    # before the evaluation, not after it
    result = evaluate(model, dataset, pipeline, args.batch_size, ten_crop=args.ten_crop,
                      progress=args.progress if first else False,
                      world=parallel and parallel.world)      # each process a share
    if not first:
        return 0                           # rank 0 prints and draws
    if not math.isfinite(result["loss"]):
        raise NonFiniteError(f"{ck.path}: the model's outputs are NaN or infinite on {name} "
                             f"({args.split}): its weights are damaged")
    classes = ck.get("classes") or list(dataset.classes)
    # The numbers first: a picture that cannot be written must not cost the evaluation.
    print(_shown(f"{ck.path}: {ck.describe()} on {name} ({args.split}, {result['count']:,} "
                 "images" + (", ten crops" if args.ten_crop else "") + ")"))
    print(f"top-1 error {100 * result['top1_error']:.2f}% (accuracy "
          f"{100 * result['accuracy']:.2f}%), top-5 error {100 * result['top5_error']:.2f}%, "
          f"loss {result['loss']:.4f}")
    m = result["confusion"]
    width = max(len(c) for c in classes)
    for k, c in enumerate(classes):
        total = int(m[k].sum())
        acc = f"{100 * m[k, k] / total:6.2f}%" if total else "     -"
        print(_shown(f"  {c:<{width}}  {acc}  of {total}"))
    sys.stdout.flush()
    _refuse_a_busy_run_folder(plot, args.plot, after=True)   # a run may have started since
    try:
        plots.plot_confusion_matrix(result["confusion"], classes, plot)
    except OSError as err:
        raise TinyAlexNetError(f"{plot}: the confusion matrix could not be written "
                               f"({err.strerror or err}); the results above are complete "
                               "(--plot PATH writes it elsewhere)") from None
    print(_shown(f"confusion matrix: {plot}"))
    return 0


def _refuse_a_busy_run_folder(plot, given, after=False):
    """A run folder is written only by the run that holds it: evaluate refuses to put its
    picture into one that another process (a run in progress) holds."""
    folder = os.path.dirname(plot) or "."
    owner = runfolder.owner_elsewhere(folder)
    if owner is None:
        return
    how = ("give --plot PATH to write it elsewhere" if not given
           else "give --plot a path outside it")
    raise TinyAlexNetError(f"{plot}: {folder} is the folder of a run in progress (in use by "
                           f"{owner}), and only that run writes there; {how}"
                           + ("; the results above are complete" if after else ""))


def _model_and_pipeline(ck, backend_name):
    if ck.get("pipeline") is None:
        raise TinyAlexNetError(f"{ck.path}: holds no input pipeline settings, so its images "
                               "cannot be prepared as in training")
    model = checkpoint.build_model(ck, backend_name)
    # Per-layer NaN checks as in training (free on NumPy, a wait for the GPU per layer
    # elsewhere); on the GPU evaluate and predict check their results instead.
    model.set_check_finite(backend.check_finite_default(backend_name))
    return model, Pipeline.from_config(ck["pipeline"])


# ----------------------------------------------------------------------------- predict

PREDICT_HELP = "the most likely classes of image files, with probabilities"


def add_predict_arguments(p):
    p.add_argument("checkpoint", help="a .npz checkpoint (or a run folder: its last.npz)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG files")
    p.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="images decoded and scored at a time (default 64): memory stays the "
                        "same for 10 or 10,000 images")
    p.add_argument("--backend", choices=list(backend.BACKENDS), default="numpy")
    add_parallel_arguments(p)


def run_predict(args):
    if args.top < 1:
        raise TinyAlexNetError(f"invalid --top {args.top}: expected a positive integer")
    if args.batch_size < 1:
        raise TinyAlexNetError(f"invalid --batch-size {args.batch_size}: expected a positive "
                               "integer")
    for path in args.images:        # before anything is loaded; never opens a FIFO
        problem = not_a_regular_file(path)
        if problem is not None:
            raise image_file_error(path, problem)
    ck = checkpoint.load(args.checkpoint)
    if ck.get("pipeline") is not None:
        # Every file's header (format, size) before the model is built and before the
        # first answer: a mistake in file 3,000 does not wait for files 1 to 2,999.
        C, h, w = ck["pipeline"]["source_shape"]
        for path in args.images:
            check_image_file(path, C, (h, w))
    parallel = start_parallel(args, args.backend)
    model, pipeline = _model_and_pipeline(ck, args.backend)
    classes = ck.get("classes") or [str(k) for k in range(ck["num_classes"])]
    top = min(args.top, len(classes))
    width = max(len(c) for c in classes)
    xp = model.xp
    # A batch at a time: decoded images and activations of one batch in memory,
    # and each batch's answers printed as soon as they are known.
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start:start + args.batch_size]
        probs = _probabilities(model, pipeline, paths, len(classes), parallel)
        if parallel is not None and not parallel.first:
            continue                       # rank 0 prints every process's answers
        for path, p in zip(paths, probs):
            if not np.isfinite(p).all():
                raise NonFiniteError(f"{ck.path}: the model's outputs for {path} are NaN or "
                                     "infinite: its weights are damaged")
            print(_shown(path))
            for rank, k in enumerate(p.argsort()[::-1][:top], 1):
                print(_shown(f"  {rank}. {classes[k]:<{width}}  {100 * p[k]:6.2f}%"))
        sys.stdout.flush()
    return 0


def _probabilities(model, pipeline, paths, num_classes, parallel):
    """(len(paths), classes) host probabilities of the images at ``paths``; with
    ``--data-parallel`` each process scores its part of them and all get the whole."""
    xp = model.xp
    mine = paths
    if parallel is not None and parallel.size > 1:
        lo, hi = parallel.part(len(paths))
        mine = paths[lo:hi]
    probs = np.zeros((len(mine), num_classes), dtype=np.float64)
    if mine:
        x = pipeline(load_image_files(mine, pipeline.source_shape), train=False, xp=xp)
        probs = backend.as_numpy(xp.exp(log_softmax(model.forward(x)))).astype(np.float64)
    if mine is paths:
        return probs
    whole = np.zeros((len(paths), probs.shape[1]))
    whole[lo:hi] = probs
    return parallel.world.sum(whole, "adding up the predictions").reshape(whole.shape)


def _shown(text):
    """``text`` as standard output can print it (a file name that is not UTF-8: \\xNN)."""
    return streams.printable(text, getattr(sys.stdout, "encoding", None) or "utf-8")


# ----------------------------------------------------------------------------- info

INFO_HELP = "a model's layers: output shapes, parameters and multiply-adds per image"
# alexnet at these bounds: 179,778,224 and 72,546,376 parameters; building the first
# takes `info` 15 s and 3 GB on a 2-core machine.  100,000,000 classes would be 1.6 TB.
MAX_INFO_CLASSES = 30_000
MAX_INFO_CHANNELS = 1_000


def add_info_arguments(p):
    p.add_argument("model", type=model_name, choices=list(MODELS),
                   help="alexnet_small, alexnet32 or alexnet")
    p.add_argument("--num-classes", type=int, help="output classes (default: 1000 for alexnet, "
                                                   "10 otherwise)")
    p.add_argument("--in-channels", type=int, default=3, help="1 for grey images (default 3)")


def run_info(args):
    classes = args.num_classes
    if classes is None:
        classes = 1000 if args.model == "alexnet" else 10
    if classes < 1 or args.in_channels < 1:
        raise TinyAlexNetError(f"invalid --num-classes {classes} / --in-channels "
                               f"{args.in_channels}: expected positive integers")
    # The table comes from a real model, weights and all: bound what it may hold.
    for option, value, most, why in (
            ("--num-classes", classes, MAX_INFO_CLASSES, "ImageNet-21k has 21,841"),
            ("--in-channels", args.in_channels, MAX_INFO_CHANNELS, "RGB has 3")):
        if value > most:
            raise TinyAlexNetError(f"invalid {option} {value:,}: expected at most {most:,} "
                                   f"({why}; info builds the model, and alexnet's weights "
                                   "grow with it)")
    model = get_model(args.model, num_classes=classes, in_channels=args.in_channels)
    print(f"{args.model}: {classes} classes, input {'x'.join(map(str, model.input_shape))}")
    print(model.summary(model.input_shape))
    return 0


# ----------------------------------------------------------------------------- main

COMMANDS = {
    "train": (TRAIN_HELP, add_train_arguments, run_train),
    "evaluate": (EVALUATE_HELP, add_evaluate_arguments, run_evaluate),
    "predict": (PREDICT_HELP, add_predict_arguments, run_predict),
    "info": (INFO_HELP, add_info_arguments, run_info),
    "bench": ("time training steps (images/s, per layer, peak memory), optionally beside PyTorch",
              bench.add_arguments, bench.run),
    "check": ("does this backend work? device, every layer's gradient check, one training step "
              "of each model against NumPy in float64, a speed figure", check.add_arguments,
              check.run),
    "prepare": (prepare.HELP, prepare.add_arguments, prepare.run),
}


def build_parser():
    parser = ArgumentParser(prog="python -m tinyalexnet",
                            description="AlexNet from scratch: train, evaluate, predict, inspect, benchmark.")
    parser.add_argument("--version", action="version", version=f"tinyalexnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    """Run one command; returns the exit code (0 ok, 2 user error, 130 Ctrl-C, 143 SIGTERM,
    129 SIGHUP)."""
    # A closed pipe, a full disk or a closed terminal on the way out never stops a
    # command half-way (see streams.py): training goes on and saves.
    with streams.guarded() as output:
        return output.finish(_run_command(build_parser().parse_args(argv)))


def _speaks(args, err=None):
    """Whether this process prints the line a command ends with.  Of several processes
    (``--data-parallel``) rank 0 speaks; another rank only for what it alone knows: its
    own failure (a RankTimeout, an error after the start, a failure ``together``
    reported), never for the copy of one that every rank met."""
    world = getattr(args, "world", None)
    if getattr(err, "quiet", False):
        return False
    if world is None or world.rank == 0:
        return True
    return err is not None and (isinstance(err, ParallelError) or getattr(args, "started", False)
                                or getattr(err, "report", False))


def _rank_prefix(args, err):
    world = getattr(args, "world", None)
    if world is None or world.rank == 0 or isinstance(err, RankTimeout):
        return ""                    # rank 0 speaks for all; a RankTimeout names its rank
    return f"rank {world.rank} of {world.size}: "


def _run_command(args):
    try:
        # SIGTERM and SIGHUP stop a command as Ctrl-C does; messages say "--download",
        # not the Python API's "download=True"
        with signals.raise_on_sigterm(), errors.command_line_words():
            return args.run(args)
    except Interrupted as stop:
        if _speaks(args):
            print(str(stop), file=sys.stderr)
        return signals.exit_code(stop)
    except KeyboardInterrupt as stop:
        if _speaks(args):
            print(signals.stopped(stop), file=sys.stderr)
        return signals.exit_code(stop)
    except TinyAlexNetError as err:
        if _speaks(args, err):
            print("error: " + _rank_prefix(args, err) + " ".join(str(err).split("\n")),
                  file=sys.stderr)
        if isinstance(err, RankTimeout):
            args.world.abort(EXIT_USER_ERROR)     # the missing ranks may hang: end them all
        return EXIT_USER_ERROR
    except backend.gpu_error_types() as err:   # out of memory in any CUDA library
        if not backend.is_out_of_memory(err):
            raise
        print(f"error: out of GPU memory ({str(err).splitlines()[0]}); try a smaller "
              "--batch-size", file=sys.stderr)
        return EXIT_USER_ERROR
