"""``python -m clr_jax.cli``: the same as the ``clr-jax`` command."""

import sys

from clr_jax.cli import main

sys.exit(main())
