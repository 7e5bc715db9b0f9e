"""The fused kernels' own operation text, run on the strict CuPy stand-in.

The stand-in cannot compile CUDA; it runs a Python reference registered under the
kernel's name.  Here that reference is the kernel's operation itself, translated
line by line from its C (``T x = ...;`` declares, ``sqrt`` is ``xp.sqrt``, an
output parameter is written in place), so a wrong formula in the kernel's text
shows on the CPU; only C syntax and types are left for ``check --backend cupy``
on a GPU.
"""
import re

from tinyalexnet.optim import fused


def translate(operation, outputs):
    """Python source for an ElementwiseKernel's C operation (simple statements only)."""
    lines = []
    for statement in operation.split(";"):
        statement = statement.strip()
        if not statement:
            continue
        statement = re.sub(r"^T\s+", "", statement)                 # a local declaration
        statement = re.sub(r"\bsqrt\(", "xp.sqrt(", statement)
        target, value = (part.strip() for part in statement.split("=", 1))
        lines.append(f"{target}[...] = {value}" if target in outputs else f"{target} = {value}")
    return "\n".join(lines)


def register(strict_cupy):
    """Register every fused kernel of the package with the stand-in."""
    code = compile(translate(fused.ADAM_OPERATION, ("p", "m", "v")), "ADAM_OPERATION", "exec")

    def adam(g, lr, b1, b2, eps, wd, c1, c2, p, m, v):
        exec(code, {"xp": strict_cupy.cupy}, dict(g=g, lr=lr, b1=b1, b2=b2, eps=eps, wd=wd,
                                                   c1=c1, c2=c2, p=p, m=m, v=v))

    strict_cupy.register_kernel(fused.ADAM_NAME, adam)
