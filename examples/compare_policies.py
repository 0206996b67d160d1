"""Smith's Table 1: every learning-rate policy against a tuned fixed rate.

A thin script over ``clr-jax compare`` (:mod:`clr_jax.cli`): a range test
gives the bounds; a fixed-rate baseline (the best of a small grid between
them) and every policy of ``clr_jax.cli._compare.POLICIES`` are trained over
several seeds, the grid and every scheduled policy as one compiled program;
the iterations each policy needs to reach the baseline's final accuracy, the
speed-up, the final accuracy and the snapshot ensemble go to
``results.md``/``results.json``, and the accuracy-vs-iteration plot (Smith's
Figure 1) to ``accuracy_vs_iteration.png``.

Usage::

    python examples/compare_policies.py --out docs/compare --overwrite
    python examples/compare_policies.py --data mnist1d --model cnn --out runs/cnn
    python examples/compare_policies.py --smoke --out /tmp/compare_smoke

Every option of ``clr-jax compare --help`` is accepted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from clr_jax import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``clr-jax compare`` with ``argv``.

    Args:
      argv: the options of ``clr-jax compare``; default ``sys.argv[1:]``.

    Returns:
      The command's exit status.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return cli.main(["compare", *args])


if __name__ == "__main__":
    sys.exit(main())
