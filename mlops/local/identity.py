"""Who a person is to the local platform: the signature an approval carries.

Its own module so the daemon's console can sign with it without importing the CLI's backend (which
imports the daemon: a cycle).
"""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path


def current_approver(cwd: Path) -> str:
    """Who signs an approval: `git config user.email` (as a commit would), else the OS user."""
    try:
        proc = subprocess.run(
            ["git", "config", "user.email"], cwd=cwd, capture_output=True, text=True, check=False
        )
        email = proc.stdout.strip()
    except OSError:
        email = ""
    return email or getpass.getuser()
