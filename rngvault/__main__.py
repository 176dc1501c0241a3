"""``python -m rngvault``: the rngvault command."""

import sys

from rngvault.cli import main

sys.exit(main())
