"""`python -m mlops` is the `mlops` command (for environments where the script is not on PATH)."""

import sys

from mlops.cli import main

sys.exit(main())
