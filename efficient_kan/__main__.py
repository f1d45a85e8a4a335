"""``python -m efficient_kan bench|check ...``: the same as the ``efficient-kan`` console script."""

import sys

from .cli import main

sys.exit(main())
