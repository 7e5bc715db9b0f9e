"""Training on several processes (and GPUs): data parallelism on MPI and NCCL, and the
paper's two towers on two processes (model parallelism).

    mpi.py        the communicator: world() (rank, size), collectives with a deadline
    allreduce.py  the gradient average: MPI on host arrays, NCCL on GPU arrays
    strategy.py   what the Trainer asks of its processes (OneProcess: alone)
    data.py       DataParallel: each process a part of every batch, one all-reduce a step
    towers.py     the two towers as state: a grouped model cut in halves, and joined
    model_parallel.py  --model-parallel 2: one rank's tower and the exchanges of Figure 2
    towers_bench.py    python -m tinyalexnet.parallel.towers_bench: the crossings' bytes, timings
    launch.py     mpiexec's command line and environment (tests, lessons)
    speed.py      python -m tinyalexnet.parallel.speed: one process against N ranks
"""
from .data import DataParallel
from .mpi import ParallelError, RankTimeout, World, world
from .strategy import OneProcess

__all__ = ["DataParallel", "OneProcess", "ParallelError", "RankTimeout", "World", "world"]
