"""``python -m exg_jax demo``."""

import sys

from .cli import main

sys.exit(main())
