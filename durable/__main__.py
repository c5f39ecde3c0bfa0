"""``python -m durable``: the same command line as ``durable``."""

import sys

from ._cli import main

sys.exit(main())
