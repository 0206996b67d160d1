"""The ``clr-jax`` command line and its experiments (no download).

Data sets (``--data``): scikit-learn's bundled digits, and MNIST-1D, generated
once by the mnist1d package and cached (:func:`clr_jax.data.load_mnist1d`);
each with an MLP and a CNN (``--model``). Every command checks its output
folder (``--out``) before any work and never replaces a file of an earlier
run without ``--overwrite``.

Subcommands:

* ``clr-jax range-test``: Smith's learning-rate range test of a small model;
  prints the suggestions and the bounds with their reasoning, and writes the
  plot, the curve (JSON, CSV) and the bounds (JSON).
* ``clr-jax compare``: Smith's Table 1 and Figure 1. A fixed-rate baseline
  (the best of a small grid inside the range test's bounds) against every
  policy of ``_compare.POLICIES``, each over several seeds run as one
  vmapped training; writes ``results.md``, ``results.json`` and
  ``accuracy_vs_iteration.png``.
* ``clr-jax demo``: the short story: range test, bounds, a fixed rate
  against triangular CLR, the iterations each needs, the plots.

Modules: ``_parser`` (the flags), ``_commands`` (the only code that reads
flags or prints), ``_models`` (the models and optimizers on offer),
``_compare`` (the experiment: plain values in, data out) and ``_report``
(tables, JSON and figures). Flax, matplotlib, scikit-learn and tqdm are
imported inside the commands, so importing this package costs no more than
``import clr_jax``.
"""

from clr_jax.cli._commands import main
from clr_jax.cli._parser import build_parser

__all__ = ["build_parser", "main"]
