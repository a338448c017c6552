"""purejaxpo: the policy-optimization family as pure, jit-compiled, vmappable JAX functions."""

from purejaxpo import _xla_safety

_xla_safety.apply()  # opt-in (PUREJAXPO_XLA_SAFETY=1); must run before JAX starts a backend

from purejaxpo import advantages, losses  # noqa: E402

__version__ = "0.1.0"
__all__ = ["advantages", "losses", "__version__"]
