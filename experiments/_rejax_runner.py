"""Runs rejax's PPO once on CartPole-v1 and prints one JSON line with its timings.

This file is run by ``bench_ppo_vs_rejax.py`` inside the separate rejax virtual environment
(``.venv-rejax``, see ``requirements-rejax.txt``); it never imports purejaxpo. It prints exactly one
line on stdout::

    {"impl": "rejax", "compile_s": .., "run_s": .., "final_return": .., "total_timesteps": ..,
     "seeds": .., "jax": .., ...}

How the benchmark's settings map onto rejax 0.1.3's ``PPO`` fields (see ``rejax/algos/ppo.py`` and
``rejax/algos/mixins.py``):

===========================  ============================================================
benchmark                    rejax
===========================  ============================================================
4 envs                       ``num_envs=4``
128 steps per rollout        ``num_steps=128``
4 epochs                     ``num_epochs=4``
4 minibatches                ``num_minibatches=4``
total env steps N            ``total_timesteps = eval_freq = (N // 512) * 512``; rejax runs
                             ``ceil(eval_freq / 512)`` updates, so this gives the same
                             ``N // 512`` updates as PureJaxRL (rejax's own rounding is up)
lr 2.5e-4                    ``learning_rate=2.5e-4``
linear annealing             rejax 0.1.3 has no ``anneal_lr``: its optimiser is
                             ``optax.adam(self.learning_rate)`` with a constant rate. With
                             ``--lr-schedule linear`` (default) this runner subclasses ``PPO``
                             and overrides only the optimiser construction, giving
                             PureJaxRL's schedule ``lr * (1 - (count // (epochs *
                             minibatches)) / num_updates)``. ``--lr-schedule constant`` runs
                             stock rejax.
gamma 0.99                   ``gamma=0.99``
gae_lambda 0.95              ``gae_lambda=0.95``
clip 0.2                     ``clip_eps=0.2`` (policy ratio and value clipping, as PureJaxRL)
ent_coef 0.01                ``ent_coef=0.01``
vf_coef 0.5                  ``vf_coef=0.5``
max_grad_norm 0.5            ``max_grad_norm=0.5``, but rejax applies it as
                             ``optax.clip(0.5)``: an element-wise clip of each gradient
                             entry, not a global-norm clip. ``--grad-clip global_norm``
                             swaps in ``optax.clip_by_global_norm`` (per network: rejax
                             keeps separate actor and critic optimisers).
64x64 tanh MLP               ``agent_kwargs={"hidden_layer_sizes": (64, 64),
                             "activation": "tanh"}`` (separate actor and critic MLPs,
                             flax's default lecun-normal initialisation, not orthogonal)
no obs/reward normalisation  ``normalize_observations=False, normalize_rewards=False``
===========================  ============================================================

Evaluation runs only once, at the end (``eval_freq = total_timesteps`` and
``skip_initial_evaluation=True``); it is rejax's own evaluation (128 episodes, stochastic policy,
inside the same jitted function, so its cost is part of ``run_s``). ``final_return`` is the mean
return of those 128 episodes, averaged over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _bench_common as bench  # next to this file (never purejaxpo: see above)


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--seeds", type=int, default=1, help="seeds per run, vmapped when > 1")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--num-epochs", type=int, default=4)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=2.5e-4)
    p.add_argument("--lr-schedule", choices=("linear", "constant"), default="linear")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--clip-eps", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--grad-clip", choices=("elementwise", "global_norm"), default="elementwise")
    p.add_argument("--hidden-sizes", default="64,64")
    p.add_argument("--activation", default="tanh")
    return p.parse_args(argv)


def _make_ppo_class(lr_schedule: str, grad_clip: str):
    import optax
    import rejax
    from flax.training.train_state import TrainState
    from jax import numpy as jnp
    from rejax.algos.algorithm import register_init

    if lr_schedule == "constant" and grad_clip == "elementwise":
        return rejax.PPO  # stock rejax

    class BenchPPO(rejax.PPO):
        """rejax's PPO with only the optimiser changed (see the module docstring)."""

        @register_init
        def initialize_network_params(self, rng):
            # Same as rejax 0.1.3's PPO.initialize_network_params except for `tx`.
            import jax

            rng, rng_actor, rng_critic = jax.random.split(rng, 3)
            obs_ph = jnp.empty([1, *self.env.observation_space(self.env_params).shape])
            actor_params = self.actor.init(rng_actor, obs_ph, rng_actor)
            critic_params = self.critic.init(rng_critic, obs_ph)

            if lr_schedule == "linear":
                num_updates = self.total_timesteps // (self.num_envs * self.num_steps)
                steps_per_update = self.num_epochs * self.num_minibatches
                lr0 = self.learning_rate

                def lr(count):
                    return lr0 * (1.0 - (count // steps_per_update) / num_updates)

            else:
                lr = self.learning_rate
            if grad_clip == "global_norm":
                clip = optax.clip_by_global_norm(self.max_grad_norm)
            else:
                clip = optax.clip(self.max_grad_norm)
            tx = optax.chain(clip, optax.adam(learning_rate=lr))
            actor_ts = TrainState.create(apply_fn=(), params=actor_params, tx=tx)
            critic_ts = TrainState.create(apply_fn=(), params=critic_params, tx=tx)
            return {"actor_ts": actor_ts, "critic_ts": critic_ts}

    return BenchPPO


def main(argv=None) -> int:
    args = _parse_args(argv)
    import jax
    import jaxlib
    import numpy as np

    batch = args.num_envs * args.num_steps
    num_updates = args.total_timesteps // batch
    if num_updates < 1:
        raise SystemExit(f"--total-timesteps must be at least num_envs * num_steps = {batch}")
    env_steps = num_updates * batch

    ppo_cls = _make_ppo_class(args.lr_schedule, args.grad_clip)
    algo = ppo_cls.create(
        env=args.env,
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        num_epochs=args.num_epochs,
        num_minibatches=args.num_minibatches,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_eps=args.clip_eps,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        total_timesteps=env_steps,
        eval_freq=env_steps,
        skip_initial_evaluation=True,
        normalize_observations=False,
        normalize_rewards=False,
        agent_kwargs={
            "hidden_layer_sizes": tuple(int(h) for h in args.hidden_sizes.split(",")),
            "activation": args.activation,
        },
    )

    # Creating the keys initialises the backend, so it is not counted as compile time.
    if args.seeds > 1:
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
        train = jax.vmap(algo.train)
    else:
        keys = jax.random.PRNGKey(args.seed)
        train = algo.train
    jax.block_until_ready(keys)

    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ts, evaluation = compiled(keys)
    jax.block_until_ready((ts, evaluation))
    run_s = time.perf_counter() - t0

    _, returns = evaluation  # (num_evals=1, 128) or (seeds, 1, 128)
    per_seed = np.asarray(returns)[..., -1, :].mean(axis=-1).reshape(-1)
    global_step = np.asarray(ts.global_step).reshape(-1)
    assert (global_step == env_steps).all(), (global_step, env_steps)

    out = {
        "impl": "rejax",
        "compile_s": compile_s,
        "run_s": run_s,
        "final_return": float(per_seed.mean()),
        "final_return_per_seed": [float(r) for r in per_seed],
        "total_timesteps": args.total_timesteps,
        "env_steps_per_seed": env_steps,
        "num_updates": num_updates,
        "seeds": args.seeds,
        "seed": args.seed,
        "steps_per_s": env_steps * args.seeds / run_s,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        **bench.dist_versions(("rejax", "gymnax", "flax", "optax")),
        "device": str(jax.devices()[0]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "lr_schedule": args.lr_schedule,
        "grad_clip": args.grad_clip,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
