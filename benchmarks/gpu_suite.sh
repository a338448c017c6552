#!/usr/bin/env bash
# Every accelerator figure the issues ask for, in one call: run it first on any lent GPU.
#
#   bash benchmarks/gpu_suite.sh                         # full scale: under 8 min on one H200
#   GPU_SUITE_SCALE=tiny bash benchmarks/gpu_suite.sh    # the CPU check CI runs (a few minutes)
#   GPU_SUITE_OUT=/some/dir bash benchmarks/gpu_suite.sh # where results go
#   GPU_SUITE_ONLY="ppo_cartpole lm" bash benchmarks/gpu_suite.sh  # some sections only
#
# Writes one `purejaxpo bench` table per section (NAME.json / .md / .png) and suite.md (all the
# tables, the device and the time each section took) under $GPU_SUITE_OUT (default
# benchmarks/results/gpu; fixed names, so a rerun overwrites the current figures). Each bench
# cell is a fresh process with a timeout, and a failed section is recorded and skipped, so one
# broken piece never costs the other figures.
#
# Sections (full scale):
#   ppo_cartpole  PPO CartPole-v1 (preset: 4 envs x 128 steps, 4 epochs x 4 minibatches),
#                 5e5 env steps per run, 1 / 64 / 512 / 2048 runs in one program
#                 (PureJaxRL's anchor: 2048 agents in about 98 s on an A100; our target < 30 s)
#   minatar       PPO Breakout-MinAtar with the CNN preset, 256 runs, 1e6 env steps each
#   sac           SAC Pendulum-v1, 256 runs, 2e4 env steps each
#   lm            `lm grpo` steps of a random 16-layer, width-512 policy (about 50M parameters),
#                 16 prompts x 8 completions of 5 and of 32 tokens
#
# On the lent GPU machine (no package index there): `bash benchmarks/device_wheels.sh` here
# first (the wheels it lacks, and purejaxpo's own), carry .whl, then e.g.:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=/tmp/site; GPU_SUITE_OUT=/tmp/gpu bash benchmarks/gpu_suite.sh;
#   tar czf $OUT/gpu.tgz -C /tmp/gpu .
set -uo pipefail
cd "$(dirname "$0")/.."
SCALE=${GPU_SUITE_SCALE:-full}
OUT=${GPU_SUITE_OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
mkdir -p "$OUT"

case "$SCALE" in
  full)
    CARTPOLE="--seeds 1,64,512,2048 --total-timesteps 500000"
    MINATAR="--seeds 256 --total-timesteps 1000000"
    SAC="--seeds 256 --total-timesteps 20000"
    LM="--lm-widths 512 --lm-layers 16 --lm-heads 8 --lm-batch 16x8 --lm-completions 5,32 --lm-steps 10"
    TIMEOUT=300 ;;
  tiny)
    CARTPOLE="--seeds 2 --total-timesteps 2048"
    MINATAR="--seeds 2 --total-timesteps 8192"
    SAC="--seeds 2 --total-timesteps 300"
    LM="--lm-widths 32 --lm-layers 1 --lm-heads 2 --lm-batch 2x2 --lm-completions 5 --lm-steps 2"
    TIMEOUT=300 ;;
  *) echo "GPU_SUITE_SCALE=$SCALE is invalid: full or tiny" >&2; exit 2 ;;
esac

SUITE="$OUT/suite.md"
{
  echo "# GPU suite ($SCALE scale, $(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  $PY -c "from purejaxpo.settings import device_description as d; print('Device:', d())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | sed 's/^/GPU: /'
  echo
} > "$SUITE"

failed=0
section() {  # section NAME TITLE FLAGS...
  local name=$1 title=$2
  shift 2
  if [ -n "${GPU_SUITE_ONLY:-}" ] && [[ " $GPU_SUITE_ONLY " != *" $name "* ]]; then
    return 0
  fi
  local start=$SECONDS
  echo "== $name: purejaxpo bench $*" >&2
  # shellcheck disable=SC2068
  if $PY -m purejaxpo bench $@ --timeout "$TIMEOUT" --title "$title" --out "$OUT/$name"; then
    status="ok"
  else
    status="FAILED"; failed=$((failed + 1))
  fi
  {
    echo "## $title"
    [ -f "$OUT/$name.md" ] && tail -n +2 "$OUT/$name.md"
    echo
    echo "($name: $status, $((SECONDS - start)) s wall)"
    echo
  } >> "$SUITE"
}

section ppo_cartpole "PPO CartPole-v1: scaling with parallel runs" --algos ppo --envs CartPole-v1 $CARTPOLE --no-lm
section minatar "PPO Breakout-MinAtar (CNN preset)" --algos ppo --envs Breakout-MinAtar $MINATAR --no-lm
section sac "SAC Pendulum-v1" --algos sac --envs Pendulum-v1 $SAC --no-lm
section lm "lm grpo tokens/s" --no-rl $LM

echo "suite: $failed section(s) failed; tables in $SUITE" >&2
cat "$SUITE"
exit $((failed > 0))
