"""What the dashboard's pages import leaves out the heavy modules only an optional path needs (issue 25: the
server's peak memory is the union of every page's imports): scipy.stats never (core.stats replaces it),
scipy.optimize and scipy.sparse until an exact solver runs, scipy.linalg until the rotation sweep does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from core import config

HEAVY = ("scipy.stats", "scipy.optimize", "scipy.sparse", "scipy.linalg")


def loaded_after(script: str) -> list[dict[str, bool]]:
    """In a fresh interpreter running `script`, which HEAVY modules were loaded at each `loaded()`."""
    code = f"import sys\nloaded = lambda: print(*[m in sys.modules for m in {HEAVY!r}])\n" + textwrap.dedent(
        script
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [
        line.split()
        for line in proc.stdout.splitlines()
        if line.split() and line.split()[0] in ("True", "False")
    ]
    return [dict(zip(HEAVY, (v == "True" for v in line), strict=True)) for line in lines]


def test_the_pages_imports_leave_the_optional_scipy_modules_out():
    """Every module a page imports from dashboard/ (they import core.lab, core.smoothing, core.units' studies,
    the brackets); then the exact solver and the rotation sweep, which do load theirs (the check can fail)."""
    before, solved, rotated = loaded_after(
        """
        import pkgutil, importlib
        import numpy as np
        import dashboard
        for info in pkgutil.iter_modules(dashboard.__path__):
            if info.name not in ("app", "views"):
                importlib.import_module(f"dashboard.{info.name}")
        import core.cli, core.experiments, core.lab, core.smoothing, core.units.coherence
        loaded()
        from core.certify import exact
        exact._solvers()
        loaded()
        from core.units.rotation import FractionalRotation
        FractionalRotation(np.eye(3))
        loaded()
        """
    )
    assert not any(before.values()), before
    assert solved["scipy.optimize"] and solved["scipy.sparse"] and not solved["scipy.stats"]
    assert rotated["scipy.linalg"] and not rotated["scipy.stats"]
