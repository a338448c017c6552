"""Runs rejax's PPO (CartPole-v1) or SAC (Pendulum-v1) once and prints one JSON line with its
timings.

This file is run by ``bench_ppo_vs_rejax.py`` (``--algo ppo``, the default) and ``bench_sac.py``
(``--algo sac``) inside the separate rejax virtual environment (``.venv-rejax``, see
``requirements-rejax.txt``); it never imports purejaxpo. It prints exactly one line on stdout::

    {"impl": "rejax", "compile_s": .., "run_s": .., "final_return": .., "total_timesteps": ..,
     "seeds": .., "jax": .., ...}

PPO
---

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

SAC
---

``--algo sac`` runs rejax 0.1.3's ``SAC`` (``rejax/algos/sac.py``) stock, with two additions of
this runner that change no computation of rejax's:

* ``final_return`` is the one purejaxpo reports: the mean return of the training episodes that
  ended in the last ``--final-fraction`` (5%) of the env steps (rounded up to whole iterations of
  ``num_envs`` steps). rejax keeps no training episode statistics, so a subclass adds three
  counters to its train state and updates them after each ``collect_transitions``; seeds with no
  episode in the window get NaN.
* rejax's own evaluation is switched off inside ``train`` (``eval_callback`` returns nothing,
  ``eval_freq = total_timesteps``, ``skip_initial_evaluation=True``), so ``run_s`` is training
  only. After timing, ``eval_return`` is the mean return of ``--eval-episodes`` episodes per seed
  with the deterministic policy ``action_loc + action_scale * tanh(mean)`` (rejax's ``act``
  samples), through rejax's ``evaluate_single``.

===========================  ============================================================
benchmark                    rejax
===========================  ============================================================
1 env                        ``num_envs=1``; each ``train_iteration`` steps every env once
                             and counts ``num_envs`` env steps
total env steps N            ``total_timesteps = eval_freq = N``: ``N / num_envs``
                             iterations
learning starts              ``fill_buffer``: gradient steps run in iterations whose
                             ``global_step > fill_buffer`` (after the step), i.e. from the
                             ``fill_buffer + 1``-th env step. Until then rejax acts with its
                             (untrained) policy, not uniformly at random.
1 gradient step per step     ``num_epochs=1`` (gradient steps per iteration)
buffer, minibatch            ``buffer_size``, ``batch_size``
lr (actor, critic, alpha)    ``learning_rate`` (one Adam for all three; eps 1e-8)
gamma                        ``gamma``
tau                          ``polyak = 1 - tau``, applied once per iteration
MLP sizes, activation        ``hidden_layer_sizes`` (a top-level field: rejax's
                             ``create_agent`` overwrites one given in ``agent_kwargs``),
                             ``agent_kwargs={"activation": name}`` (a ``flax.linen``
                             name: swish is silu)
no observation normalisation ``normalize_observations=False``
===========================  ============================================================

Fixed by rejax (no setting): twin critics, target entropy ``-action_dim``, initial temperature
1 (``log_alpha = 0``), temperature loss ``-alpha * (log_prob + target_entropy)`` (in alpha, not
log alpha), log-std clipped to [-10, 2], gradient order actor, critic, temperature; gymnax
0.0.9's single ``done`` (a time-limit truncation ends the Bellman backup as a termination);
flax's default lecun-normal initialisation; no gradient clipping (``max_grad_norm=inf``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import _bench_common as bench  # next to this file (never purejaxpo: see above)


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=("ppo", "sac"), default="ppo")
    p.add_argument("--env", default=None, help="default: CartPole-v1 (ppo), Pendulum-v1 (sac)")
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
    sac = p.add_argument_group("sac (--algo sac; --num-envs, --learning-rate, --gamma, "
                               "--hidden-sizes and --activation apply too)")
    sac.add_argument("--buffer-size", type=int, default=10_000)
    sac.add_argument("--fill-buffer", type=int, default=256)
    sac.add_argument("--batch-size", type=int, default=256)
    sac.add_argument("--polyak", type=float, default=0.98, help="1 - tau")
    sac.add_argument("--eval-episodes", type=int, default=10,
                     help="deterministic evaluation episodes per seed, after timing")
    sac.add_argument("--final-fraction", type=float, default=0.05,
                     help="final_return: episodes that ended in this last share of the steps")
    args = p.parse_args(argv)
    if args.env is None:
        args.env = "CartPole-v1" if args.algo == "ppo" else "Pendulum-v1"
    return args


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
    return _main_sac(args) if args.algo == "sac" else _main_ppo(args)


def _main_ppo(args) -> int:
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

    (ts, evaluation), compile_s, run_s = bench.compile_and_run_seeds(
        algo.train, args.seeds, args.seed)

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
        **bench.run_fields(args, env_steps, run_s),
        "num_updates": num_updates,
        **bench.runner_environment(("rejax", "gymnax", "flax", "optax")),
        "lr_schedule": args.lr_schedule,
        "grad_clip": args.grad_clip,
    }
    print(json.dumps(out), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# SAC


def _make_sac_class(window_steps: int):
    """rejax's SAC plus the training-episode counters behind ``final_return`` (module
    docstring): episodes that end at an env step ``> total_timesteps - window_steps``."""
    import rejax
    from jax import numpy as jnp
    from rejax.algos.algorithm import register_init

    class BenchSAC(rejax.SAC):
        @register_init
        def initialize_episode_counters(self, rng):
            del rng
            return {
                "bench_episode_return": jnp.zeros(self.num_envs),
                "bench_final_return_sum": jnp.zeros(()),
                "bench_final_episodes": jnp.zeros((), jnp.int32),
            }

        def collect_transitions(self, ts):
            ts, batch = super().collect_transitions(ts)  # rejax's step, unchanged
            ret = ts.bench_episode_return + batch.reward
            done = batch.done.astype(bool)
            in_window = ts.global_step > self.total_timesteps - window_steps
            ended = jnp.logical_and(done, in_window)
            ts = ts.replace(
                bench_episode_return=jnp.where(done, 0.0, ret),
                bench_final_return_sum=ts.bench_final_return_sum + jnp.sum(
                    jnp.where(ended, ret, 0.0)),
                bench_final_episodes=ts.bench_final_episodes + jnp.sum(ended),
            )
            return ts, batch

    return BenchSAC


def _deterministic_eval(algo, actor_params, key, num_episodes: int):
    """Mean return of ``num_episodes`` episodes per seed acting with ``tanh(mean)`` (scaled to
    the action range), via rejax's ``evaluate_single``; ``actor_params`` have a leading seed
    axis. Returns ``[seeds]`` numpy."""
    import jax
    import numpy as np
    from jax import numpy as jnp
    from rejax.evaluate import evaluate_single

    actor, env, env_params = algo.actor, algo.env, algo.env_params
    max_steps = int(env_params.max_steps_in_episode)

    def act(params, obs):
        dist = actor.apply(params, jnp.expand_dims(obs, 0), method="_action_dist")
        action = actor.action_loc + jnp.tanh(dist.loc) * actor.action_scale
        return jnp.squeeze(action)  # as rejax's own act

    def one_seed(params):
        keys = jax.random.split(key, num_episodes)
        _, returns = jax.vmap(lambda k: evaluate_single(
            lambda obs, rng: act(params, obs), env, env_params, k, max_steps))(keys)
        return returns

    returns = jax.jit(jax.vmap(one_seed))(actor_params)
    return np.asarray(returns, np.float64)


def _main_sac(args) -> int:
    import jax
    import numpy as np

    iterations = args.total_timesteps // args.num_envs
    if iterations < 1 or iterations * args.num_envs != args.total_timesteps:
        raise SystemExit("--total-timesteps must be a positive multiple of --num-envs")
    env_steps = iterations * args.num_envs
    window_steps = math.ceil(args.final_fraction * iterations) * args.num_envs

    sac_cls = _make_sac_class(window_steps)
    algo = sac_cls.create(
        env=args.env,
        num_envs=args.num_envs,
        buffer_size=args.buffer_size,
        fill_buffer=args.fill_buffer,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_epochs=1,
        total_timesteps=env_steps,
        eval_freq=env_steps,
        skip_initial_evaluation=True,
        gamma=args.gamma,
        polyak=args.polyak,
        normalize_observations=False,
        normalize_rewards=False,
        hidden_layer_sizes=tuple(int(h) for h in args.hidden_sizes.split(",")),
        agent_kwargs={"activation": args.activation},
    )
    algo = algo.replace(eval_callback=lambda algo, ts, rng: ())  # no evaluation in run_s

    (ts, _), compile_s, run_s = bench.compile_and_run_seeds(
        algo.train, args.seeds, args.seed)

    global_step = np.asarray(ts.global_step).reshape(-1)
    assert (global_step == env_steps).all(), (global_step, env_steps)
    sums = np.asarray(ts.bench_final_return_sum, np.float64).reshape(-1)
    counts = np.asarray(ts.bench_final_episodes).reshape(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    actor_params = ts.actor_ts.params
    if args.seeds == 1:
        actor_params = jax.tree.map(lambda x: x[None], actor_params)
    eval_returns = _deterministic_eval(algo, actor_params, jax.random.PRNGKey(args.seed + 1),
                                       args.eval_episodes)
    eval_per_seed = eval_returns.mean(axis=-1)

    out = {
        "impl": "rejax",
        "algo": "sac",
        "compile_s": compile_s,
        "run_s": run_s,
        "final_return": float(np.nanmean(per_seed)) if np.isfinite(per_seed).any() else None,
        "final_return_per_seed": [float(r) for r in per_seed],
        "final_episodes_per_seed": [int(c) for c in counts],
        "eval_return": float(eval_per_seed.mean()),
        "eval_return_per_seed": [float(r) for r in eval_per_seed],
        "eval_episodes": args.eval_episodes,
        **bench.run_fields(args, env_steps, run_s),
        # iterations i = 1..I learn where i * num_envs > fill_buffer
        "gradient_steps_per_seed": iterations - args.fill_buffer // args.num_envs,
        **bench.runner_environment(("rejax", "gymnax", "flax", "optax")),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
