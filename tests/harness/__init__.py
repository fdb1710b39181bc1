"""Throwaway servers and apps the tests start, shared with benchmarks/run.py.

Import by full name (``from tests.harness.servers import RedisServer``) with the repository
root on ``sys.path``: pytest puts it there (``pythonpath = .`` in tox.ini), and benchmarks/
do it once in ``benchcommon.use_working_tree()``.
"""

from __future__ import annotations

from pathlib import Path

#: The repository checkout: examples/, docs/ and the package live here.
REPO_ROOT = Path(__file__).resolve().parents[2]
