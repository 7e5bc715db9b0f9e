"""Training on more than one process: the paper's two towers on two ranks
(``towers.py``, ``model_parallel.py``)."""
