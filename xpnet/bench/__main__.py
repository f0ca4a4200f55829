"""``python -m xpnet.bench ...``: the bench's command line (see `command`)."""
import sys

from .command import main

sys.exit(main())
