#!/usr/bin/env bash
# Downloads, here, the wheels purejaxpo needs on the lent GPU machine beyond its preinstalled
# packages (Python 3.12, jax 0.11.2, flax, optax, chex, orbax-checkpoint, tensorstore,
# safetensors, tokenizers are there; these are not), and builds purejaxpo's own wheel from this
# checkout (the package as installed, not as laid out in the tree), into .whl/
# (ignored by git), for the device tool's `carry`. Rerun it after changing the code.
#
#   bash benchmarks/device_wheels.sh
#   then, in the device call (carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
#   GPU_SUITE_OUT=/tmp/gpu bash benchmarks/gpu_suite.sh; tar czf $OUT/gpu.tgz -C /tmp/gpu .
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python  # has setuptools, wheel
plat=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
  case $n in 2014|1) plat+=(--platform "manylinux${n}_x86_64") ;;
             *) plat+=(--platform "manylinux_${n}_x86_64") ;; esac
done
pkgs=(gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.4 distrax==0.1.9
      "tfp-nightly==0.26.0.dev20261027" decorator gast "dm-tree" flashbax==0.1.3)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl "${pkgs[@]}"
rm -f .whl/purejaxpo-*.whl
$PY -m pip wheel -q --no-deps --no-build-isolation -w .whl .
du -sh .whl
ls .whl
