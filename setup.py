"""Package discovery (everything else is in pyproject.toml).

`envs/` lives at the top of the repository but is installed as `purejaxpo.envs`, so it never
clashes with another top-level package called `envs`. Packages are discovered, never listed by
hand: a new subpackage (of purejaxpo/ or envs/) is in the wheel without editing anything.
tests/test_wheel.py builds the wheel and runs it from a fresh virtual environment.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["purejaxpo", "purejaxpo.*"])
packages += ["purejaxpo.envs"] + [f"purejaxpo.envs.{name}" for name in find_packages("envs")]

setup(packages=packages, package_dir={"purejaxpo.envs": "envs"})
