"""Shared fixtures and the one case list the checks parametrize over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACTIVATION_NAMES = ("tanh", "sigmoid", "relu", "identity")


def run_bptt(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (``python -m symbolic``) in a subprocess."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    if env:
        environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "symbolic", *args],
        cwd=cwd or ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def bptt():
    return run_bptt
