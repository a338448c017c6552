"""purejaxpo: the policy-optimization family as pure, jit-compiled, vmappable JAX functions.

Importing it changes nothing in the process (no environment variable, no JAX setting); on a
CPU, :func:`purejaxpo.backends.cpu.enable` at the top of a script turns the CPU speed-ups on.
"""

from purejaxpo import advantages, losses

__version__ = "0.1.0"
__all__ = ["advantages", "losses", "__version__"]
