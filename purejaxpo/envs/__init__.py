"""Environments, adapters and wrappers (installed as ``purejaxpo.envs``).

* :func:`make` builds any gymnax environment by name, with a clear error and close matches for
  an unknown name.
* :mod:`purejaxpo.envs.memory` has ``CueRecall-v0``, a memory task (recall a cue after a
  delay) that only a policy with memory can solve.
* :mod:`purejaxpo.envs.wrappers` has the pure, vectorised wrappers that training uses: a batch
  of environments, episode statistics, observation and reward normalisation. Each keeps its
  state explicitly (a pytree), so a whole training run stays one pure function.
"""

from purejaxpo.envs.memory import CueRecall, CueRecallParams
from purejaxpo.envs.probes import PROBES, Probe, ProbeParams
from purejaxpo.envs.registry import env_names, make, validate_env_name
from purejaxpo.envs.wrappers import (
    EpisodeStatistics,
    NormalizeObservation,
    NormalizeReward,
    VecEnv,
    make_vec_env,
)

__all__ = [
    "CueRecall",
    "CueRecallParams",
    "PROBES",
    "Probe",
    "ProbeParams",
    "env_names",
    "make",
    "validate_env_name",
    "VecEnv",
    "EpisodeStatistics",
    "NormalizeObservation",
    "NormalizeReward",
    "make_vec_env",
]
