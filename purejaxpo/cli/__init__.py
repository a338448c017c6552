"""The ``purejaxpo`` command line.

    purejaxpo train ppo --env CartPole-v1 --seeds 16 --total-timesteps 500000 --json out.json
    purejaxpo train ppo --env Pendulum-v1 --set learning_rate=1e-3 --set hidden_sizes=64,64
    purejaxpo sweep ppo --env CartPole-v1 --grid lr=1e-4,3e-4,1e-3 --grid clip_eps=0.1,0.2 --seeds 8
    purejaxpo train ppo --seeds 8 --checkpoint-dir ck --checkpoint-every 50 --log out.csv [--resume]
    purejaxpo eval ck --episodes 20 --greedy
    purejaxpo plot out.json --out curves.png
    purejaxpo envs

The sub-commands live in :mod:`purejaxpo.cli.train` (``train``, ``eval``, ``plot``,
``envs``), :mod:`purejaxpo.cli.sweep` and :mod:`purejaxpo.cli.lm` (``lm ...``); ``bench`` in
:mod:`purejaxpo.bench`. No library module imports this package.

``train`` runs every seed in one ``jax.jit(jax.vmap(train))`` program (on a CPU, with the CPU
backend, :mod:`purejaxpo.backends.cpu`, split over one device per core; ``--cpu-devices``,
``--no-fused-loops``),
prints each seed's final return (mean return of the episodes completed in the last 5% of its
env steps), the compile and run times and the env steps per second, and with ``--json`` writes
them with every setting used.
"""

from __future__ import annotations

import argparse
import sys

from purejaxpo.backends import cpu


def make_parser() -> argparse.ArgumentParser:
    """The ``purejaxpo`` parser with every sub-command.

    The sub-commands' modules are imported here, not at the top: they import the environments
    and the sweep machinery, which start JAX, and :func:`main` must apply the CPU settings
    (:func:`_early_cpu_settings`) before that.
    """
    from purejaxpo import bench
    from purejaxpo.cli import lm, sweep, train

    parser = argparse.ArgumentParser(prog="purejaxpo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_cli_parser(sub)  # purejaxpo train|eval|plot|envs
    sweep.add_cli_parser(sub)  # purejaxpo sweep ALGO --grid lr=1e-4,3e-4 --seeds 8
    lm.add_cli_parser(sub)  # purejaxpo lm sft|grpo|ppo|dpo|rm|eval|generate
    bench.add_cli_parser(sub)  # purejaxpo bench --seeds 1,64,512
    return parser


CPU_SETTING_COMMANDS = ("train", "sweep")
"""The commands that apply ``--cpu-devices`` and ``--no-fused-loops`` in their own process
(``bench`` has them too, and applies them in each cell's process)."""

CPU_HOOK_COMMANDS = CPU_SETTING_COMMANDS + ("lm", "eval")
"""The commands that compile programs, and so turn the CPU backend on where JAX runs on a CPU."""


def _early_cpu_settings(argv) -> None:
    """Turns the CPU backend on (:func:`purejaxpo.backends.cpu.enable`) before anything starts
    JAX, for the commands that compile programs: ``train`` and ``sweep`` with their
    ``--cpu-devices`` and fused loops (``--no-fused-loops``), the ``lm`` commands with the
    vector width alone (the loop settings slow sampling), ``eval`` with the hooks alone. On a
    GPU or TPU the hooks stay off.

    Building the parser imports the environments, and gymnax makes arrays on import, which
    starts JAX's CPU backend; the device count and ``XLA_FLAGS`` must be set before that.
    Errors are left to the command, which calls :func:`~purejaxpo.backends.cpu.use_cpu_cores`
    again and reports them.
    """
    command = argv[0] if argv else None
    if command not in CPU_HOOK_COMMANDS:
        return
    if command not in CPU_SETTING_COMMANDS:
        cpu.enable(fused_loops=False, wide_vectors=command == "lm", cpu_devices=None,
                   quiet=True)
        return
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--cpu-devices", default="auto")
    early.add_argument("--no-fused-loops", dest="fused_loops", action="store_false")
    known, _ = early.parse_known_args(argv[1:])
    try:
        devices = cpu.parse_cpu_devices(known.cpu_devices)
    except ValueError:
        devices = None  # reported by the command
    try:
        cpu.enable(fused_loops=known.fused_loops, wide_vectors=known.fused_loops,
                   cpu_devices="auto" if devices is None else devices, quiet=True)
    except (ValueError, RuntimeError):
        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _early_cpu_settings(argv)
    args = make_parser().parse_args(argv)
    return args.func(args)
