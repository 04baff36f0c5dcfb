"""`intriguing dashboard [streamlit flags]`: start the Streamlit app (dashboard/app.py).

The command replaces itself with the server (os.execv): the PID the caller holds is the server's, so Ctrl-C,
SIGTERM or a process manager stop the server and free its port, and nothing is left behind."""

from __future__ import annotations

import os
import sys

from core import config

APP = config.PROJECT_ROOT / "dashboard" / "app.py"


def command(extra: list[str]) -> list[str]:
    """The server's command line: this Python's streamlit on the app, with the user's extra flags."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), *extra]


def run(args) -> int:
    cmd = command(args.extra)
    # Streamlit reads .streamlit/config.toml (upload limit, headless, theme) from its working folder: the
    # checkout, or the copy `pip install .` ships. Paths given as flags were made absolute by set_locations.
    os.chdir(config.DATA_ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv only returns by raising OSError


def register(sub, common) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="start the Streamlit dashboard (extra flags go to `streamlit run`, e.g. --server.port 8502)",
    )
    p.set_defaults(func=run, accepts_extra=True)
