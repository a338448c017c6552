"""Look environments up by name: every gymnax environment and purejaxpo's own, with helpful errors."""

from __future__ import annotations

import difflib

import gymnax

from purejaxpo.envs.memory import CueRecall
from purejaxpo.envs.probes import PROBES

# purejaxpo's own environments (gymnax API), by name. Kept here rather than registered in
# gymnax's global registry, so importing purejaxpo changes nothing in gymnax.
ENVIRONMENTS = {
    "CueRecall-v0": CueRecall,
    **PROBES,  # ProbeConstant-v0, ...: tiny tasks with exactly known values (envs/probes.py)
}


def env_names() -> list[str]:
    """All environment names that :func:`make` accepts: gymnax's, then purejaxpo's."""
    return list(gymnax.registered_envs) + [n for n in ENVIRONMENTS if n not in gymnax.registered_envs]


def validate_env_name(name: str, field: str = "env") -> None:
    """Raises ``ValueError`` naming ``field`` and the closest valid names if ``name`` is unknown."""
    names = env_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if not close:  # case-insensitive substring, e.g. "cartpole"
        close = [n for n in names if name.lower().split("-")[0] in n.lower()][:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"{field}={name!r} is not a known environment.{hint} "
        f"Valid names: {', '.join(names)}."
    )


def make(name: str, **env_kwargs):
    """Builds the environment ``name`` (gymnax's or one of :data:`ENVIRONMENTS`).

    Returns:
      ``(env, env_params)``, as ``gymnax.make``. ``env.step`` returns
      ``(obs, state, reward, terminated, truncated, info)`` with ``info["final_observation"]``
      holding the observation before an automatic reset.
    """
    validate_env_name(name)
    if name in ENVIRONMENTS:
        env = ENVIRONMENTS[name](**env_kwargs)
        return env, env.default_params
    return gymnax.make(name, **env_kwargs)
