"""`intriguing dashboard [streamlit flags]`: start the Streamlit app (dashboard/app.py)."""

from __future__ import annotations

import subprocess
import sys

from core.config import PROJECT_ROOT

APP = PROJECT_ROOT / "dashboard" / "app.py"


def run(args) -> int:
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), *args.extra]
    return subprocess.call(cmd, cwd=PROJECT_ROOT)  # picks up .streamlit/config.toml (upload limit)


def register(sub, common) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="start the Streamlit dashboard (extra flags go to `streamlit run`, e.g. --server.port 8502)",
    )
    p.set_defaults(func=run, accepts_extra=True)
