"""Handlers of the Runs tab: every run in one table (state, what it trained, how it ended), runs
compared side by side (the settings in which they differ, their end figures and DPO curves, from
huvi.compare), and deleting a run (huvi.jobs, refused while it trains)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from huvi.compare import RunFacts, compare_runs, run_facts
from huvi.errors import HuviError
from ui.common import Context, duration, user_errors
from ui.plots import SMOOTH

FIGURES = ("motion loss", "DPO loss", "accuracy", "reward margin", "held-out accuracy")


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _facts_row(facts: RunFacts) -> dict:
    steps = " + ".join(f"{facts.steps[s]} {s}" for s in facts.trained) or "none yet"
    return {"run": facts.name, "category": facts.category, "preset": facts.settings.get("preset", ""), "steps": steps} | {
        name: _figure(facts.end.get(name)) for name in FIGURES
    } | {"time in steps": duration(facts.seconds)}


class RunsHandlers(Context):
    def runs_table(self) -> pd.DataFrame:
        """One row per run, newest first: state, category, preset, steps done, end figures, time spent in steps."""
        rows = []
        for name in self.runs():
            run_dir = self.ws.runs / name
            state = self.jobs.status(run_dir).state
            try:
                rows.append({"state": state} | _facts_row(run_facts(run_dir)))
            except HuviError:  # started, but its config is not written yet (or it never began)
                rows.append({"state": state, "run": name})
        columns = ["run", "state", "category", "preset", "steps", *FIGURES, "time in steps"]
        return pd.DataFrame(rows, columns=columns).fillna("")

    def run_choices(self, chosen: list[str] | None = None) -> gr.Dropdown:
        runs = self.runs()
        return gr.Dropdown(choices=runs, value=[r for r in chosen or [] if r in runs], multiselect=True)

    def run_pick(self, value: str | None = None) -> gr.Dropdown:
        """The runs, with `value` kept while it exists and nothing picked otherwise (nothing is deleted by default)."""
        runs = self.runs()
        return gr.Dropdown(choices=runs, value=value if value in runs else None)

    def compare(self, chosen: list[str] | None):
        """(table: one row per setting that differs and per end figure, one column per run; DPO accuracy
        of each run over its steps; a note) of the chosen runs."""
        if not chosen or len(chosen) < 2:
            return gr.Dataframe(visible=False), gr.LinePlot(visible=False), "Pick two runs or more to compare them."
        facts, differ = compare_runs([self.ws.runs / name for name in chosen])
        names = [f.name for f in facts]
        table = [{"": key} | {f.name: str(f.settings.get(key, "")) for f in facts} for key in differ]
        table += [{"": f"end: {name}"} | {f.name: _figure(f.end.get(name)) for f in facts} for name in FIGURES]
        curves = []
        for name in names:
            rows = [r for r in self._metrics(name) if r.get("stage") == "dpo" and isinstance(r.get("accuracy"), (int, float))]
            frame = pd.DataFrame([(r["step"], r["accuracy"]) for r in rows], columns=["step", "value"])
            curves.append(frame.assign(value=frame["value"].rolling(SMOOTH, min_periods=1).mean(), run=name))
        curve = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["step", "value", "run"])
        note = (
            f"{len(differ)} setting{'s differ' if len(differ) != 1 else ' differs'} between them."
            if differ
            else "They share every setting: any difference is the data's or chance's."
        )
        return gr.Dataframe(value=pd.DataFrame(table), visible=True), gr.LinePlot(value=curve, visible=not curve.empty), note

    def _metrics(self, name: str) -> list[dict]:
        from huvi.runs import Run

        return Run(self.ws.runs / name).read_metrics()

    @user_errors
    def delete(self, name: str | None, confirmed: str):
        """Delete the run after the browser's confirmation (`confirmed` is its name; "" when cancelled)."""
        if not name or confirmed != name:
            return gr.skip(), gr.skip(), gr.skip()
        self.jobs.delete(self.run_dir(name))
        gr.Info(f"Deleted {name}.")
        return self.runs_table(), self.run_pick(None), self.run_choices()
