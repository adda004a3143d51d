"""``python -m laion5b_spark``: the same as the ``l5s`` command."""

import sys

from .cli import main

sys.exit(main())
