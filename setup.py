# All metadata lives in pyproject.toml; this shim only exists for Beam's stager.
#
# `--setup_file` (Dataflow and other remote runners) builds the sdist that workers
# install.  Beam 2.72's Stager._build_setup_package first runs
# `python -m build --no-isolation --sdist`; that fails where the `build` module is
# missing or the environment does not meet [build-system].requires (a stock Python 3.11
# venv has setuptools 65.5).  It then falls back to `python setup.py sdist` -- but only
# when --setup_file names a setup.py.  With this file both paths work.
from setuptools import setup

setup()
