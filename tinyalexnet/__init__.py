"""tinyalexnet: AlexNet from scratch, with every forward and backward pass written out.

    from tinyalexnet.models import alexnet
    model = alexnet()                  # the paper's network, on NumPy
    model.to_gpu()                     # the same code on CuPy

Packages: ``backend`` (NumPy/CuPy), ``layers``, ``models``, ``optim``,
``gradcheck``, ``datasets``, ``train``; ``python -m tinyalexnet --help`` for the
command line.
"""
__version__ = "0.1.0"
