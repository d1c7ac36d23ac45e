"""The Train tab's plots from a run's metrics rows: one plot per stage's loss (each on its own step
axis, from 0 to the stage's planned steps, in whole steps), implicit accuracy, reward margin and the
winners' and losers' denoising loss.

Each series is drawn raw (light) and as a running mean (dark). The y-range of the loss, margin
and health plots follows the running mean and the bulk of the raw values, so a few DPO spikes
(a loss of 30 beside a typical 0.7) do not flatten the curve; the title says how many were cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from huvi.runs import STAGES

SMOOTH = 20  # steps in the running means drawn beside the raw per-step values
# Raw per-step values light, their running mean dark in the same hue.
SERIES_COLORS = {
    "motion loss": "#c7d2fe", f"motion loss (mean of {SMOOTH})": "#4338ca",
    "DPO loss": "#fecaca", f"DPO loss (mean of {SMOOTH})": "#b91c1c",
    f"training pairs (mean of {SMOOTH})": "#4338ca", "held-out pairs": "#059669",
    "reward margin": "#fde68a", f"reward margin (mean of {SMOOTH})": "#b45309",
    "winner": "#059669", "loser": "#b91c1c", "winner, reference": "#6ee7b7", "loser, reference": "#fca5a5",
}
PLOTS = ("motion_loss", "dpo_loss", "accuracy", "margin", "health")
TITLES = {
    "motion_loss": "Motion loss", "dpo_loss": "DPO loss", "accuracy": "Implicit accuracy (DPO)",
    "margin": "Reward margin (DPO)", "health": "",
}
KEEP = 0.95  # share of the raw values a plot's y-range always shows


@dataclass(frozen=True)
class Plot:
    frame: pd.DataFrame  # long format: step, value, series
    x_lim: list[float]  # [0, the stage's planned steps]
    y_lim: list[float] | None  # None: fitted to every point
    title: str

    @property
    def empty(self) -> bool:
        return self.frame.empty


def _series(rows: list[dict], key: str, label: str, raw: bool = True, smooth: bool = True) -> dict[str, pd.DataFrame]:
    """`key` of `rows` as {series name: (step, value) frame}: the raw values and/or their running mean."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    frame = pd.DataFrame(points, columns=["step", "value"])
    out = {label: frame} if raw else {}
    if smooth:
        out[f"{label} (mean of {SMOOTH})" if raw else label] = frame.assign(value=frame["value"].rolling(SMOOTH, min_periods=1).mean())
    return out


def _plot_frame(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long (step, value, series) frame; empty when no series has a point.

    A series without points yet gets one empty (NaN) row: the browser's plot fixes its colours
    when first drawn with data, so a series that appears later (the first held-out score) would
    stay invisible until a reload."""
    steps = [f["step"].min() for f in parts.values() if not f.empty]
    if not steps:
        return pd.DataFrame({"step": [], "value": [], "series": []})
    filled = [f if not f.empty else pd.DataFrame({"step": [min(steps)], "value": [float("nan")]}) for f in parts.values()]
    return pd.concat([f.assign(series=name) for name, f in zip(parts, filled)], ignore_index=True)


def robust_range(raw: pd.Series, smooth: pd.Series) -> tuple[list[float] | None, int]:
    """A y-range that holds every running-mean value and the central KEEP of the raw values, padded
    by a tenth; and how many raw values fall outside it. None when nothing would be cut, or when
    there are too few values (under SMOOTH) to tell a spike from the curve."""
    raw, smooth = raw.dropna(), smooth.dropna()
    if len(raw) < SMOOTH:
        return None, 0
    tail = (1 - KEEP) / 2
    low = min(raw.quantile(tail), smooth.min() if not smooth.empty else raw.min())
    high = max(raw.quantile(1 - tail), smooth.max() if not smooth.empty else raw.max())
    pad = (high - low) / 10 or abs(high) / 10 or 0.1
    low, high = (0.0 if low >= 0 and raw.min() >= 0 else low - pad), high + pad
    cut = int(((raw < low) | (raw > high)).sum())
    return ([float(low), float(high)], cut) if cut else (None, 0)


def _plot(parts: dict[str, pd.DataFrame], steps: int, title: str, fixed: list[float] | None = None) -> Plot:
    frame = _plot_frame(parts)
    if fixed is not None or frame.empty:
        return Plot(frame, [0, steps], fixed, title)
    raw = frame[~frame["series"].str.contains("mean of")]["value"]
    smooth = frame[frame["series"].str.contains("mean of")]["value"]
    y_lim, cut = robust_range(raw if not raw.empty else smooth, smooth)
    note = f" — {cut} spike{'s' if cut != 1 else ''} beyond the y-range" if cut else ""
    return Plot(frame, [0, steps], y_lim, title + note)


def metric_plots(rows: list[dict], totals: dict[str, int], held_out: bool = False) -> dict[str, Plot]:
    """The Train tab's five plots from metrics rows; `totals` (stage -> planned steps) names the stages
    the run trains and sets each x-axis, `held_out` whether held-out scores will come."""
    motion = [r for r in rows if r.get("stage") == "motion"]
    dpo = [r for r in rows if r.get("stage") == "dpo"]
    steps = {stage: max(totals.get(stage) or 0, max((r.get("step", 0) for r in rows if r.get("stage") == stage), default=0), 1) for stage in STAGES}
    accuracy = _series(dpo, "accuracy", f"training pairs (mean of {SMOOTH})", raw=False)
    if held_out:
        accuracy |= _series(dpo, "val_accuracy", "held-out pairs", smooth=False)
    health = (("loss_w", "winner"), ("loss_l", "loser"), ("ref_loss_w", "winner, reference"), ("ref_loss_l", "loser, reference"))
    return {
        "motion_loss": _plot(_series(motion, "loss", "motion loss") if "motion" in totals else {}, steps["motion"], TITLES["motion_loss"]),
        "dpo_loss": _plot(_series(dpo, "loss", "DPO loss") if "dpo" in totals else {}, steps["dpo"], TITLES["dpo_loss"]),
        "accuracy": _plot(accuracy, steps["dpo"], TITLES["accuracy"], fixed=[0, 1]),
        "margin": _plot(_series(dpo, "reward_margin", "reward margin"), steps["dpo"], TITLES["margin"]),
        # running means only: four raw series would hide each other
        "health": _plot({label: f for key, name in health for label, f in _series(dpo, key, name, raw=False).items()}, steps["dpo"], TITLES["health"]),
    }
