"""Old name of gancolor.fetch, kept for one release.

The download command was renamed because `gancolor.datasets` read like the torch
Datasets (gancolor.data.datasets) or the user's ./datasets folder. Scripts that run
`python -m gancolor.datasets` or import from here keep working for this release (the
command prints one line saying so on stderr); the next release removes this module.
"""

import sys

from gancolor.fetch import *  # noqa: F403 - the old import path re-exports the whole public API
from gancolor.fetch import main

RENAMED = "gancolor.datasets is renamed gancolor.fetch; run `python -m gancolor.fetch` instead (the old name will be removed)"

if __name__ == "__main__":
    print(RENAMED, file=sys.stderr)
    sys.exit(main())
