"""purejaxpo: the policy-optimization family as pure, jit-compiled, vmappable JAX functions."""

from purejaxpo import _xla_safety

_xla_safety.apply()  # must run before JAX creates its first backend; see _xla_safety.py

from purejaxpo import advantages, losses  # noqa: E402

__version__ = "0.1.0"
__all__ = ["advantages", "losses", "__version__"]
