"""`make gpu-check`: does a GPU node run tvlars? One command, offline, within a budget (``scripts/gpu_check.py``
is its command line).

- :mod:`~tvlars.gpu_check.plan`: the steps, most important first, each a subprocess of the project's own entry
  points (pytest, ``python -m tvlars.train``, ``torchrun``, the benchmark scripts) with its planned time;
- :mod:`~tvlars.gpu_check.runner`: runs them under one global deadline (a step that hangs is killed with its
  process group; a step that passes after its planned time is SLOW, not failed);
- :mod:`~tvlars.gpu_check.verdicts`: what each step's outputs say;
- :mod:`~tvlars.gpu_check.preflight`: what a node needs before any step can start (the packages the steps import,
  offline wheels of the pure-Python ones, a C compiler and Python's headers for Triton), said in one line;
- :mod:`~tvlars.gpu_check.report`: the device and versions, and ``report.md``;
- :mod:`~tvlars.gpu_check.cli`: the options and the order of it all.

Every module here imports only the standard library at import time, so the check starts on a node that has
nothing but torch and reports what is missing.
"""
