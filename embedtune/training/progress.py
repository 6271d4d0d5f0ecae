"""Where a run's time goes: the clock of its stages, dev evaluations spaced by their measured cost, and an ETA.

A user on a CPU pays every part of a run in minutes, so the run keeps account of them
(:class:`StageClock`: setup, baseline, training, dev evaluations, writing) and the record says it.
Two things follow from measuring rather than predicting:

* **Spacing.** The dev set is sized before training so that its evaluations cost at most
  :data:`~embedtune.training.dev.DEV_COST_SHARE` of the run (:meth:`RetrievalDevEvaluator.fit
  <embedtune.training.dev.RetrievalDevEvaluator.fit>`), from a count of texts; texts are not seconds
  (a dev document may be longer than a training one, bf16 may encode faster than it trains). After
  each evaluation :class:`RunClock` compares the seconds really spent on evaluating with the seconds
  of training, and where the remaining evaluations would take the share over the limit it spaces
  them further apart (whole multiples of the planned interval, so they stay at the ends of passes).
  The end of the run is always evaluated.
* **ETA.** The trainer's bar times the training steps only; the line :class:`RunClock` says (at each
  evaluation and every tenth of the run) adds the evaluations still to come, so its ETA is for the
  whole run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embedtune.training.dev import DEV_COST_SHARE, DevEvaluator

if TYPE_CHECKING:
    from transformers import TrainerCallback


@dataclass
class StageClock:
    """Wall seconds per stage of a run, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _mark: float = 0.0

    def __post_init__(self) -> None:
        self._mark = self.started

    def lap(self, stage: str) -> float:
        """Close ``stage`` (the time since the previous lap, added to it) and return its seconds."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._mark
        self._mark = now
        return self.seconds[stage]

    def record(self) -> dict[str, float]:
        return {stage: round(s, 1) for stage, s in self.seconds.items()} | {"total": round(self.total, 1)}

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3700`` -> ``1h01m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def evaluations(steps: int, interval: int) -> int:
    """How many evaluations a run of ``steps`` makes at every ``interval``-th step and at its end."""
    return steps // interval + (1 if steps % interval else 0)


def run_clock(
    dev: DevEvaluator | None,
    log: Callable[[str], None] | None,
    started: float,
    *,
    space: bool = True,
    share: float = DEV_COST_SHARE,
):
    """A :class:`RunClock` trainer callback (a class made on first use: transformers is imported lazily).

    ``started`` is the run's start (``time.perf_counter``), from which the dev curve is timed; ``space``
    False keeps the evaluation interval as it is (one the user gave).
    """
    return _run_clock_class()(dev, log, started, space, share)


@functools.cache
def _run_clock_class() -> type[TrainerCallback]:
    from transformers import TrainerCallback

    class RunClock(TrainerCallback):
        """Times the training steps and the evaluations, widens the evaluation interval where evaluating
        would cost over ``share`` of the run, and says a whole-run ETA (see the module docstring).

        ``widened`` lists ``(step, new interval, why)``; ``train_seconds`` is the time in steps; ``curve``
        the dev metric that picks the checkpoint at each evaluation, with the step and the seconds since
        the run started (the time a user waits for that quality).
        """

        def __init__(
            self, dev: DevEvaluator | None, log: Callable[[str], None] | None, started: float, space: bool, share: float
        ) -> None:
            self.dev, self.log, self.started, self.space, self.share = dev, log, started, space, share
            self.curve: list[dict[str, float]] = []
            self.train_seconds = 0.0
            self.widened: list[tuple[int, int, str]] = []
            self._began = 0.0
            self._last_eval = dev.seconds if dev is not None else 0.0
            self._eval_cost = 0.0  # seconds of the latest evaluation
            self._said = 0

        def on_step_begin(self, args, state, control, **kwargs: Any) -> None:
            self._began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs: Any) -> None:
            self.train_seconds += time.perf_counter() - self._began
            if state.global_step // max(1, state.max_steps // 10) > self._said and not control.should_evaluate:
                self._say(state)

        def on_evaluate(self, args, state, control, metrics: dict | None = None, **kwargs: Any) -> None:
            if self.dev is None:
                return
            value = (metrics or {}).get(args.metric_for_best_model)
            seconds = round(time.perf_counter() - self.started, 1)
            self.curve.append({"step": state.global_step, "seconds": seconds, "metric": value})
            self._eval_cost = self.dev.seconds - self._last_eval
            self._last_eval = self.dev.seconds
            if self.space:
                self._space(state)
            self._say(state)

        def _space(self, state) -> None:
            step, last, interval = state.global_step, state.max_steps, state.eval_steps
            if step >= last or step == 0 or self._eval_cost <= 0:
                return
            per_step = self.train_seconds / step
            allowed = self.share / (1 - self.share) * per_step * last - self.dev.seconds
            wider = interval
            while _left(step, last, wider) * self._eval_cost > allowed and wider < last - step:
                wider += interval
            if wider != interval:
                why = (
                    f"an evaluation took {self._eval_cost:.1f} s against {per_step:.1f} s a step: every {interval} "
                    f"steps would put evaluation over {self.share:.0%} of the run"
                )
                state.eval_steps = state.save_steps = wider
                self.widened.append((step, wider, why))
                if self.log is not None:
                    self.log(f"dev evaluation every {wider} steps from step {step} ({why})")

        def _say(self, state) -> None:
            if self.log is None or state.global_step == 0:
                return
            step, last = state.global_step, state.max_steps
            self._said = step // max(1, last // 10)  # a tenth is said once, at an evaluation or after it
            left = (last - step) * self.train_seconds / step
            if self.dev is not None:
                left += _left(step, last, state.eval_steps) * self._eval_cost
            self.log(
                f"step {step}/{last} ({step / last:.0%}): training {fmt_duration(self.train_seconds)}, dev "
                f"evaluation {fmt_duration(self.dev.seconds if self.dev else 0)}; whole run about "
                f"{fmt_duration(left)} left"
            )

    return RunClock


def _left(step: int, last: int, interval: int) -> int:
    """Evaluations after ``step`` in a run of ``last`` steps evaluated every ``interval`` and at its end."""
    return evaluations(last, interval) - step // interval
