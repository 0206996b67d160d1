"""The result of a range test: the curves, the sweep's settings, and access.

:class:`RangeTestResult` holds the curves and the settings that produced
them. Reading it (suggestions, Smith's bounds) lives in :mod:`._reading`,
the peers' rules in :mod:`._peer_rules`, files in :mod:`._io` and figures in
:mod:`clr_jax.plotting`; the methods here are the public doors to them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
import optax

from clr_jax import _validation as v
from clr_jax.range_test import _io, _peer_rules, _reading
from clr_jax.range_test._reading import BoundsReport, RangeTestWarning, Reading

__all__ = [
    "BoundsReport",
    "RangeTestConfig",
    "RangeTestResult",
    "RangeTestWarning",
    "Reading",
]


class RangeTestConfig(NamedTuple):
    """The settings of a sweep, kept with its curves (plain Python values).

    A value that was traced when the sweep ran is ``None``.
    """

    start_lr: float | None = None
    end_lr: float | None = None
    num_steps: int | None = None
    mode: str | None = None
    beta: float | None = None
    diverge_threshold: float | None = None
    batch_size: int | None = None
    num_sweeps: int | None = None
    optimizer: str | None = None
    hyperparams: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # The decay of the optimizer's average of gradients ('momentum' or 'b1'),
    # when the optimizer has one and it is not swept (then it is in
    # ``hyperparams``); it sets the lag that ``'half_edge'`` corrects.
    momentum: float | None = None
    versions: tuple[tuple[str, str], ...] = ()


_CURVES = _io.CURVES
# Evaluations on held-out data, every ``val_every`` steps (see range_test).
_VALIDATION = ("val_steps", "val_losses", "val_metrics")
_NO_CONFIG = RangeTestConfig()


def _host_step(step):
    """``diverged_step`` as ``int``/``None`` (a tuple of them for many sweeps)."""
    if step is None or isinstance(step, (int, np.integer)):
        return None if step is None or int(step) < 0 else int(step)
    if isinstance(step, (tuple, list)):
        return tuple(_host_step(s) for s in step)
    arr = np.asarray(step)
    if arr.ndim == 0:
        return _host_step(int(arr))
    return tuple(_host_step(int(s)) for s in arr.reshape(-1))


def _row(x, k: int):
    """Row ``k`` of a per-sweep field, or ``None``."""
    return None if x is None else x[k]


def _mean(x):
    """The mean over sweeps of a field, or ``None``."""
    return None if x is None else np.mean(x, axis=0)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[*_CURVES, "diverged_step", "final_state", *_VALIDATION],
    meta_fields=["config"],
)
@dataclasses.dataclass(frozen=True)
class RangeTestResult:
    """The curve of one range test, or of ``K`` sweeps run together.

    A pytree: the curves, ``diverged_step`` and ``final_state`` are its
    leaves, the settings (``config``) its static part. Inside compiled code
    every curve is an array and ``diverged_step`` is ``int32`` with ``-1``
    meaning "never diverged". The result the public functions return is the
    host form: NumPy curves and ``diverged_step`` an ``int`` or ``None`` (a
    tuple of those, one per sweep, for ``K`` sweeps).

    Every curve has shape ``[num_steps]``, or ``[K, num_steps]`` for ``K``
    sweeps (``lrs`` included, so that every field has the leading sweep axis).
    After divergence the losses and metrics are NaN.

    Attributes:
      lrs: the learning rate used at each step.
      losses: the raw loss of each step, measured before its update.
      smoothed_losses: bias-corrected EMA of ``losses`` (see
        :func:`clr_jax.range_test_with_step`).
      metrics: the metric of each step, or ``None`` when none was recorded.
      smoothed_metrics: bias-corrected EMA of ``metrics``, or ``None``.
      diverged_step: the step that diverged, or ``None``.
      final_state: the training state after the sweep, frozen at its last
        finite value before divergence (:class:`SweepState` for
        :func:`clr_jax.range_test`); ``None`` once loaded from a file.
      val_steps: the steps after which ``val_data`` was evaluated (``int32``,
        every ``val_every`` steps and the last one), or ``None`` without
        ``val_data``.
      val_losses: the mean loss on ``val_data`` of the state after each of
        ``val_steps`` (NaN from the divergence on), or ``None``.
      val_metrics: the mean metric there, or ``None`` when no metric is
        recorded. The three have a leading ``K`` axis for ``K`` sweeps.
      config: the sweep's settings, a :class:`RangeTestConfig`.
    """

    lrs: Any
    losses: Any
    smoothed_losses: Any
    metrics: Any = None
    smoothed_metrics: Any = None
    diverged_step: Any = None
    final_state: Any = None
    val_steps: Any = None
    val_losses: Any = None
    val_metrics: Any = None
    config: RangeTestConfig = _NO_CONFIG

    def replace(self, **changes) -> RangeTestResult:
        """A copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    # -- shape ----------------------------------------------------------------

    def to_host(self) -> RangeTestResult:
        """The host form: NumPy curves, ``diverged_step`` an ``int`` or ``None``.

        Accepts the device form too (curves as JAX arrays, ``diverged_step``
        an ``int32`` array with ``-1`` for "never"), with or without a leading
        sweep axis; the curves keep their dtype and ``final_state`` is kept as
        it is. Every reading, file and plot starts here.

        Raises:
          ValueError: for curves with more than one leading sweep axis.
          TypeError: inside a trace (the readings need concrete values).
        """
        if any(v.is_traced(getattr(self, f)) for f in (*_CURVES, *_VALIDATION)):
            raise TypeError(
                "readings, files and plots of a range test run on the host: call "
                "them on the concrete result a jitted function returns, not inside "
                "the trace."
            )
        curves = {
            f: None if getattr(self, f) is None else np.asarray(getattr(self, f))
            for f in (*_CURVES, *_VALIDATION)
        }
        if curves["losses"].ndim > 2:
            raise ValueError(
                "a result must have at most one leading sweep axis; got losses of "
                f"shape {curves['losses'].shape}. Reshape its leaves to "
                "[K, num_steps] first."
            )
        step = _host_step(self.diverged_step)
        if step is None and curves["losses"].ndim == 2:
            step = (None,) * curves["losses"].shape[0]
        return dataclasses.replace(self, **curves, diverged_step=step)

    @property
    def num_sweeps(self) -> int | None:
        """``K`` for a result of many sweeps, ``None`` for a single sweep."""
        return np.shape(self.losses)[0] if np.ndim(self.losses) == 2 else None

    def sweep(self, k: int) -> RangeTestResult:
        """Sweep ``k`` of a many-sweep result, as a single-sweep result."""
        if self.num_sweeps is None:
            raise ValueError("`sweep` needs a result of many sweeps; this has one.")
        arrays = {f: _row(getattr(self, f), k) for f in (*_CURVES, *_VALIDATION)}
        return RangeTestResult(
            **arrays,
            diverged_step=_row(self.diverged_step, k),
            final_state=jax.tree.map(lambda x: x[k], self.final_state),
            config=self.config,
        )

    def mean(self) -> RangeTestResult:
        """The mean curve of a many-sweep result (NaN after the first divergence).

        The validation curves are averaged too; their steps are the sweeps'.
        """
        if self.num_sweeps is None:
            return self
        host = self.to_host()  # the device form marks "never" with -1
        arrays = {f: _mean(getattr(host, f)) for f in (*_CURVES, *_VALIDATION)}
        arrays["val_steps"] = _row(host.val_steps, 0)  # equal in every sweep
        stops = [s for s in host.diverged_step if s is not None]
        return RangeTestResult(
            **arrays, diverged_step=min(stops) if stops else None, config=self.config
        )

    # -- readings (see ._reading) ----------------------------------------------

    def read(
        self,
        *,
        skip_start: int | None = None,
        use_metric: bool | None = None,
        metric_mode: Literal["max", "min"] = "max",
        validation: bool = False,
    ):
        """Everything read from the curve: suggestions, bounds, blow-up, notes.

        The readings use a zero-phase smoothing of the raw losses (no lag),
        stop at the blow-up and come from the part before the lowest loss; see
        :mod:`clr_jax.range_test._reading` for the rules and
        :mod:`clr_jax.range_test._smoothing` for the curve and the noise model.
        Unlike :meth:`suggest` and :meth:`bounds`, this warns about nothing:
        the notes are in the :class:`Reading`.

        Args:
          skip_start: steps left out at the start; default 0.
          use_metric, metric_mode, validation: which curve the bounds are read
            from, as in :meth:`bounds` (the suggestions always read the loss).

        Returns:
          A :class:`Reading`; a tuple of one per sweep for a many-sweep
          result (each with the notes on how the sweeps disagree).

        Raises:
          ValueError: as :meth:`bounds`, and for a bad ``skip_start``.
        """
        return _reading.read(
            self,
            skip_start=skip_start,
            use_metric=use_metric,
            metric_mode=metric_mode,
            validation=validation,
        )

    def suggest(
        self,
        method: _reading.SuggestMethod = "half_edge",
        *,
        skip_start: int | None = None,
    ):
        """A learning rate read from the loss curve.

        Every method reads the zero-phase smoothed raw loss (:meth:`read`), on
        the part after ``skip_start`` and before both the blow-up and the
        lowest loss (``'half_edge'`` also uses where the blow-up is):

        * ``'half_edge'`` (the default): half the rate at the edge where
          training breaks down: the rate of the lowest loss, or 0.4 times
          the blow-up's rate when that is higher (a flat bottom, whose lowest
          point is poorly placed), and never past the lowest loss. Both are
          read ``round(b / (1 - b))`` steps early for an optimizer whose
          average of gradients decays by ``b`` (``momentum``, Adam's ``b1``:
          :attr:`RangeTestConfig.momentum`), the steps by which the loss
          trails such an optimizer's rate; NaN when the loss still falls at
          ``end_lr``. Of these rules the best predictor of the best fixed
          rate, and the steadiest across sweep lengths
          (``benchmarks/README.md``);
        * ``'valley'``: fastai's valley, the middle of the longest decreasing
          run (:func:`~clr_jax.range_test._peer_rules.fastai_valley`);
        * ``'minimum'``: the rate of the lowest loss divided by 10, as
          fastai's; NaN when the loss still falls at ``end_lr``;
        * ``'steepest'``: the most negative ``np.gradient`` of the loss per
          step (per ``log(lr)`` for an exponential sweep), as torch-lr-finder's.

        Args:
          method: ``'half_edge'``, ``'valley'``, ``'minimum'`` or
            ``'steepest'``.
          skip_start: steps left out at the start; default 0.

        Returns:
          A float; a NumPy array with one value per sweep for a many-sweep
          result. NaN when the curve shows no clear descent. Every note on the
          reading (no clear descent, a rate at an edge of the sweep, no
          divergence, sweeps that disagree) is also a :class:`RangeTestWarning`.

        Raises:
          ValueError: for an unknown ``method`` or a bad ``skip_start``.
        """
        return _reading.suggest(self, method, skip_start=skip_start)

    def suggestions(self, *, skip_start: int | None = None) -> dict[str, Any]:
        """Every method's suggestion as ``{method: lr}`` (see :meth:`suggest`)."""
        return _reading.suggestions(self, skip_start=skip_start)

    def peer_suggestions(self) -> dict[str, Any]:
        """What fastai's and torch-lr-finder's rules suggest from this sweep.

        Their rules on the curves they record themselves (the EMA, trimmed as
        they trim it), without this library's checks; see
        :func:`~clr_jax.range_test._peer_rules.peer_suggestions`.
        """
        return _peer_rules.peer_suggestions(self)

    def bounds(
        self,
        *,
        use_metric: bool | None = None,
        metric_mode: Literal["max", "min"] = "max",
        skip_start: int | None = None,
        validation: bool = False,
    ) -> tuple[Any, Any]:
        """Smith's ``(base_lr, max_lr)`` for a cyclical schedule.

        ``base_lr`` is where the curve starts to improve and ``max_lr`` where
        the improvement stops, before the minimum and the blow-up. The curve is
        the metric when one was recorded and rises clearly (Smith reads
        accuracy), else the loss, both smoothed without lag as in
        :meth:`read`. On the descent (or rise) from its peak to its trough,
        ``base_lr`` is the first rate where 10% of the gain is made and
        ``max_lr`` the first where 90% is made. :meth:`bounds_report` says
        which curve was used, why, and what is doubtful.

        With ``validation=True`` the curves are the held-out ones instead
        (``val_metrics``, else ``val_losses``; Smith reads validation
        accuracy), one point every ``val_every`` steps at the rate of the
        step it follows, cut at the training loss's blow-up and smoothed over
        as many steps as the loss. The same refusals apply, and fewer than
        10 points before the blow-up give ``(nan, nan)`` and a note (lower
        ``val_every``).

        Args:
          use_metric: ``None`` uses the metric when it was recorded and rises
            clearly; ``False`` always uses the loss; ``True`` requires the
            metric.
          metric_mode: ``'max'`` when a higher metric is better (accuracy),
            ``'min'`` otherwise.
          skip_start: as in :meth:`suggest`.
          validation: read the curves on ``val_data`` (``range_test(...,
            val_data=...)``) rather than the per-step training ones.

        Returns:
          ``(base_lr, max_lr)``, floats (arrays of one per sweep for a
          many-sweep result); ``(nan, nan)`` when the curve shows no clear
          improvement, and ``max_lr`` NaN when it still improves at
          ``end_lr``. The notes of the reading are also raised as
          :class:`RangeTestWarning`.

        Raises:
          ValueError: for ``use_metric=True`` without a recorded metric (on
            ``val_data`` with ``validation``), ``validation=True`` without
            ``val_data``, or an unknown ``metric_mode``.

        Example:
          >>> import jax.numpy as jnp, numpy as np
          >>> import clr_jax
          >>> x = 3.0 + np.random.default_rng(0).normal(size=(512, 2))
          >>> data = {"x": jnp.asarray(x, jnp.float32)}
          >>> def loss_fn(p, batch):
          ...     return jnp.mean(jnp.sum((p[None, :] - batch["x"]) ** 2, -1))
          >>> result = clr_jax.range_test(loss_fn, jnp.zeros(2), data,
          ...     batch_size=16, start_lr=1e-3, end_lr=10.0, num_steps=200,
          ...     val_data=data, val_every=5, val_batch_size=128, progress=False)
          >>> report = result.bounds_report(validation=True)
          >>> report.source, bool(report.base_lr < report.max_lr)
          ('val_loss', True)
        """
        report = self.bounds_report(
            use_metric=use_metric,
            metric_mode=metric_mode,
            skip_start=skip_start,
            validation=validation,
        )
        if self.num_sweeps is not None:
            return (
                np.array([r.base_lr for r in report]),
                np.array([r.max_lr for r in report]),
            )
        return report.base_lr, report.max_lr

    def bounds_report(
        self,
        *,
        use_metric: bool | None = None,
        metric_mode: Literal["max", "min"] = "max",
        skip_start: int | None = None,
        validation: bool = False,
    ):
        """:meth:`bounds` with its reasoning, a :class:`BoundsReport`.

        Its ``notes`` are the doubts about the reading (also raised as
        :class:`RangeTestWarning`). A tuple of reports, one per sweep, for a
        many-sweep result.
        """
        return _reading.bounds_report(
            self,
            use_metric=use_metric,
            metric_mode=metric_mode,
            skip_start=skip_start,
            validation=validation,
        )

    def to_schedule(
        self,
        kind: Literal["triangular", "triangular2", "exp_range", "one_cycle"] = (
            "triangular"
        ),
        *,
        step_size: int | None = None,
        total_steps: int | None = None,
        **kwargs,
    ) -> optax.Schedule:
        """A cyclical schedule between the :meth:`bounds` of this curve.

        Args:
          kind: ``'triangular'``, ``'triangular2'``, ``'exp_range'`` (pass
            ``gamma``) take ``step_size``; ``'one_cycle'`` takes
            ``total_steps`` and peaks at ``max_lr`` starting from ``base_lr``.
          step_size: half-cycle length in updates (see
            :func:`clr_jax.step_size_for`).
          total_steps: length of a one-cycle schedule.
          **kwargs: forwarded to the schedule factory (e.g. ``gamma``, ``window``).

        Returns:
          An ``optax.Schedule``.

        Raises:
          ValueError: for a many-sweep result (pick one with :meth:`sweep` or
            :meth:`mean`), a curve without clear bounds (no clear descent, or
            a loss still falling at ``end_lr``), an unknown ``kind``,
            or a missing ``step_size``/``total_steps``.
        """
        return _reading.to_schedule(
            self, kind, step_size=step_size, total_steps=total_steps, **kwargs
        )

    # -- plot and files (see clr_jax.plotting and ._io) -------------------------

    def plot(self, **kwargs):
        """Plots the curve; see :func:`clr_jax.plotting.plot_range_test`."""
        from clr_jax.plotting import plot_range_test

        return plot_range_test(self, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The whole record as plain JSON values; see :func:`._io.to_dict`.

        The curves (with their dtypes, NaN as ``None``, ±inf as ``"inf"`` and
        ``"-inf"``), ``diverged_step``, the :class:`RangeTestConfig` and, for
        the reader, the :meth:`read` of the curve (not read back).
        """
        return _io.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RangeTestResult:
        """Inverse of :meth:`to_dict`."""
        return _io.from_dict(cls, d)

    def save_json(self, path) -> None:
        """Writes :meth:`to_dict` as standard JSON; loads back equal."""
        _io.save_json(self, path)

    @classmethod
    def load_json(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_json`."""
        return _io.load_json(cls, path)

    def save_csv(self, path) -> None:
        """Writes one row per step (and sweep).

        Columns: ``sweep`` (many-sweep results only), ``step``, ``lr``, ``loss``,
        ``smoothed_loss``, then ``metric`` and ``smoothed_metric`` when
        recorded, and ``diverged`` (1 from the divergence step on). Values
        are exact (±inf kept); the configuration lives in the JSON file.
        """
        _io.save_csv(self, path)

    @classmethod
    def load_csv(cls, path) -> RangeTestResult:
        """Reads a file written by :meth:`save_csv`."""
        return _io.load_csv(cls, path)
