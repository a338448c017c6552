"""Package discovery (everything else is in pyproject.toml).

Packages are discovered, never listed by hand: a new subpackage of ``purejaxpo/`` (environments
in ``purejaxpo/envs/``, language-model tasks in ``purejaxpo/lm/tasks/``, ...) is in the wheel
without editing anything. tests/test_wheel.py builds the wheel and runs it from a fresh virtual
environment.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["purejaxpo", "purejaxpo.*"]))
