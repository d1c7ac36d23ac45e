"""Signs that a DPO stage is going wrong, read from its own metrics rows as they are written.

Diffusion-DPO only sees the difference between the winner's and the loser's denoising errors, so it
can lower its loss by making both worse, the loser faster: the model degrades while the loss looks
fine (over-optimisation). Past that point it overshoots: training accuracy falls and the loss climbs
back. Measured on the tiny preset at lr 1e-3 and beta 5000 (issue 16): loss 0.005 at step 50, 4.9
with training accuracy 0 at step 200, the winners' and losers' own losses ~40% above the
reference's, and held-out accuracy below chance. The monitor watches, over the last WINDOW steps:

    degrading        the winners' and the losers' mean losses both above the reference's by `degrade` or more
                     (dpo.degrade_warning: the preset's, since how far a healthy stage drifts depends on the base)
    accuracy fell    the running training accuracy (over PAIR_WINDOW steps) dropped by ACCURACY_DROP from a
                     peak of ACCURACY_PEAK or more
    loss climbing    the running median loss (over PAIR_WINDOW steps) back above ln 2 after it
                     had fallen below LEARNED: on most of its recent training pairs the model is worse
                     than the reference. Not the mean: with one pair a step and beta 5000 a wrong pair
                     costs 5-40 where a right one costs ~0, so one or two wrong pairs in 20 lifted the
                     20-step mean above ln 2 in 37 of 126 DPO stages of the sweeps (2026-12-06; tiny,
                     demo and wan-tiny), none collapsing: their 20-step median was 0.19 at most
                     whenever it fired
    held-out fell    (with data.holdout > 0) held-out accuracy HELD_OUT_DROP or more below its best

A sign is named in every row while it lasts (`"health": [...]` in metrics.jsonl) and logged, in one
sentence saying what to do, when it starts (again only after WINDOW steps without it). The monitor
is pure bookkeeping: it never changes training, and `replay` rebuilds it from the rows of a resumed
stage.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from huvi.config import DpoStageConfig

WINDOW = 20  # steps in the running means: ~10% of a tiny DPO stage, enough to average out the pair draws
# One pair a step: training accuracy is that pair's 0 or 1, so its running mean wanders and its peak is the
# luckiest window. Healthy stages simulated as 200 steps each right with p = 0.8 (500 seeds): 20 steps and a 0.25
# drop (the first reading) cried overshoot in 96% of them, and in 10 of 14 real demo-preset stages
# (2026-12-05) none of which collapsed; 50 steps and 0.35 in 0.25% (1000 steps: 3%; p = 0.7:
# 18%). A collapse like issue 16's (1.0 to 0) still shows within ~20 steps of it.
# The loss's median is read over the same 50 steps: over 20 it still crossed ln 2 in 9 of the 126 sweep
# stages above (training accuracy 0.66-0.88 over their last 50 steps), over 30 or more in none.
PAIR_WINDOW = 50
ACCURACY_PEAK = 0.8
ACCURACY_DROP = 0.35
LEARNED = 0.1  # the running median loss of a stage that has learned its pairs (ln 2 = 0.69 at the start)
HELD_OUT_DROP = 0.15

DEGRADING, ACCURACY_FELL, LOSS_CLIMBING, HELD_OUT_FELL = "degrading", "accuracy fell", "loss climbing", "held-out fell"
ADVICE = (
    "lower dpo.learning_rate, raise dpo.drift_weight (it holds the clips' own losses at the reference's) "
    "or train fewer dpo.steps (with data.holdout > 0 the best held-out adapter is kept)"
)


@dataclass
class HealthMonitor:
    degrade: float = DpoStageConfig.degrade_warning  # relative; the preset's dpo.degrade_warning
    window: int = WINDOW
    pair_window: int = PAIR_WINDOW
    _winners: deque = field(init=False)  # loss_w / ref_loss_w - 1, the last `window` values
    _losers: deque = field(init=False)
    _accuracy: deque = field(init=False)  # training accuracy, the last `pair_window` values
    _losses: deque = field(init=False)  # the DPO loss, the last `pair_window` values
    _peak: float = 0.0  # best running training accuracy so far
    _low: float = math.inf  # lowest running median loss so far
    _best_held_out: float = -math.inf
    _held_out: float = -math.inf  # the latest held-out accuracy
    _last_seen: dict[str, int] = field(default_factory=dict)  # sign -> the last step it was active

    def __post_init__(self) -> None:
        self._winners, self._losers = (deque(maxlen=self.window) for _ in range(2))
        self._accuracy, self._losses = (deque(maxlen=self.pair_window) for _ in range(2))

    def update(self, row: dict) -> tuple[list[str], list[str]]:
        """Take one DPO metrics row; return the signs active now and the sentences of those that
        just started (to log)."""
        for values, value in (
            (self._losses, row["loss"]),
            (self._winners, row["loss_w"] / row["ref_loss_w"] - 1),
            (self._losers, row["loss_l"] / row["ref_loss_l"] - 1),
            (self._accuracy, row["accuracy"]),
        ):
            values.append(value)
        step, full, pairs_full = row["step"], len(self._winners) == self.window, len(self._accuracy) == self.pair_window
        accuracy, winners, losers = (statistics.fmean(v) for v in (self._accuracy, self._winners, self._losers))
        loss = statistics.median_low(self._losses)  # more than half the pairs wrong, not an average of two
        if pairs_full:
            self._peak = max(self._peak, accuracy)
            self._low = min(self._low, loss)
        found: list[tuple[str, str]] = []  # (sign, the sentence that says it)
        if full and winners > self.degrade and losers > self.degrade:
            found.append((DEGRADING, (
                f"DPO is degrading the model at step {step}: the winners' and the losers' own denoising losses are "
                f"{winners:+.0%} and {losers:+.0%} against the reference's (mean of {self.window} steps; this warns above "
                f"{self.degrade:.0%}, dpo.degrade_warning); {ADVICE}."
            )))  # fmt: skip
        if pairs_full and self._peak >= ACCURACY_PEAK and accuracy <= self._peak - ACCURACY_DROP:
            found.append((ACCURACY_FELL, (
                f"DPO is overshooting at step {step}: training accuracy fell from {self._peak:.2f} to {accuracy:.2f} "
                f"(mean of {self.pair_window} steps); {ADVICE}."
            )))  # fmt: skip
        if pairs_full and self._low < LEARNED and loss > math.log(2):
            worse = sum(value > math.log(2) for value in self._losses)
            found.append((LOSS_CLIMBING, (
                f"The DPO loss climbed back to {loss:.3g} by step {step} from {self._low:.3g} (median of {self.pair_window} steps): "
                f"on {worse} of its last {self.pair_window} training pairs the model is now worse than the reference; {ADVICE}."
            )))  # fmt: skip
        if not math.isnan(row.get("val_accuracy", math.nan)):
            self._best_held_out = max(self._best_held_out, row["val_accuracy"])
            self._held_out = row["val_accuracy"]
        if math.isfinite(self._held_out) and self._held_out <= self._best_held_out - HELD_OUT_DROP:
            found.append((HELD_OUT_FELL, (
                f"Held-out accuracy fell to {self._held_out:.2f} by step {step} from its best {self._best_held_out:.2f}: "
                "DPO is overshooting; the best held-out adapter is kept as the final one."
            )))  # fmt: skip
        new = [sentence for sign, sentence in found if step - self._last_seen.get(sign, -self.window) >= self.window]
        for sign, _ in found:
            self._last_seen[sign] = step
        return [sign for sign, _ in found], new

    def replay(self, rows: list[dict]) -> None:
        """Rebuild the state from the rows a resumed stage already wrote."""
        for row in rows:
            self.update(row)


SIGN_TEXT = {
    DEGRADING: "the winners' and losers' own losses are rising above the reference's",
    ACCURACY_FELL: "training accuracy fell from its peak",
    LOSS_CLIMBING: "the loss climbed back above the reference's",
    HELD_OUT_FELL: "held-out accuracy fell from its best",
}


def summary(rows: Sequence[dict]) -> str:
    """One sentence on a run's DPO health for its page, from its metrics rows: the signs active at
    the latest DPO step (or at any step, once the stage has moved on), and with held-out pairs which
    step's adapter is kept. Empty when there is nothing to say."""
    dpo = [r for r in rows if r.get("stage") == "dpo"]
    if not dpo:
        return ""
    last, parts = dpo[-1], []
    if last.get("health"):
        parts.append(f"⚠ DPO health at step {last['step']}: " + "; ".join(SIGN_TEXT.get(s, s) for s in last["health"]) + f". To fix: {ADVICE}.")
    else:
        seen = sorted({s for r in dpo for s in r.get("health", ())})
        if seen:
            parts.append("DPO showed signs of trouble earlier (" + ", ".join(seen) + ") but none at its latest step.")
    if "best_step" in last:
        held = [r for r in dpo if r["step"] == last["best_step"] and "val_accuracy" in r]
        score = f" (held-out accuracy {held[0]['val_accuracy']:.2f})" if held else ""
        parts.append(f"Best held-out adapter so far: step {last['best_step']}{score}; it becomes the final DPO adapter.")
    return " ".join(parts)
