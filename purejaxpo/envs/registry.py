"""Look environments up by name, with helpful errors: every gymnax environment, purejaxpo's own,
and, with the optional extras installed, brax's (``brax:<name>[@<backend>]``) and MuJoCo
Playground's (``playground:<name>[@<impl>]``, see :mod:`purejaxpo.envs.physics`)."""

from __future__ import annotations

import difflib

import gymnax

from purejaxpo.envs import physics
from purejaxpo.envs.memory import CueRecall
from purejaxpo.envs.probes import PROBES

# purejaxpo's own environments (gymnax API), by name. Kept here rather than registered in
# gymnax's global registry, so importing purejaxpo changes nothing in gymnax.
ENVIRONMENTS = {
    "CueRecall-v0": CueRecall,
    **PROBES,  # ProbeConstant-v0, ...: tiny tasks with exactly known values (envs/probes.py)
}


PHYSICS_FAMILIES = ("brax", "playground")
"""Optional environment families, each named ``<family>:<name>`` (:mod:`purejaxpo.envs.physics`)."""


def env_names(family: str | None = None) -> list[str]:
    """Environment names that :func:`make` accepts.

    Args:
      family: None for gymnax's, then purejaxpo's (nothing optional is imported); ``"brax"``
        or ``"playground"`` (a trailing ``":"`` is allowed) for that family's names, e.g.
        ``["brax:ant", ...]`` (each also takes ``@<backend>``). Raises ``ValueError`` with the
        install command if the family's package is missing.
    """
    if family is None:
        return list(gymnax.registered_envs) + [n for n in ENVIRONMENTS
                                               if n not in gymnax.registered_envs]
    kind = family.rstrip(":")
    if kind not in PHYSICS_FAMILIES:
        raise ValueError(f"family={family!r} is invalid: must be None or one of "
                         f"{', '.join(PHYSICS_FAMILIES)}")
    return physics.names(kind)


def validate_env_name(name: str, field: str = "env") -> None:
    """Raises ``ValueError`` naming ``field`` and the closest valid names if ``name`` is unknown.

    ``brax:`` and ``playground:`` names are checked against that package's registry; if the
    package is not installed, the error gives the command that installs it.
    """
    if physics.family(name) is not None:
        physics.validate(name, field)
        return
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
    """Builds the environment ``name`` (gymnax's, one of :data:`ENVIRONMENTS`, or a ``brax:`` /
    ``playground:`` one, whose ``env_kwargs`` may set ``episode_length``).

    Returns:
      ``(env, env_params)``, as ``gymnax.make``. ``env.step`` returns
      ``(obs, state, reward, terminated, truncated, info)`` with ``info["final_observation"]``
      holding the observation before an automatic reset.
    """
    validate_env_name(name)
    if physics.family(name) is not None:
        return physics.make(name, **env_kwargs)
    if name in ENVIRONMENTS:
        env = ENVIRONMENTS[name](**env_kwargs)
        return env, env.default_params
    return gymnax.make(name, **env_kwargs)
