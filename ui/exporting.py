"""Handlers of the Export tab: a run's LoRA in one of its model family's export formats, its model card,
and one zip of both with the run's settings (huvi.bundle), every file downloadable."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from huvi.errors import HuviError
from huvi.families import ALL_EXPORT_FORMATS
from ui.common import Context, user_errors


def without_front_matter(markdown: str) -> str:
    """A model card without its leading `---` YAML block (the Hub reads it; a reader needs the rest)."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---", 4)
        if end != -1:
            return markdown[end + 4 :].lstrip("\n")
    return markdown


class ExportHandlers(Context):
    def format_choices(self, run_name: str | None) -> list[str]:
        """The export formats of the run's model family; every family's while no run is picked or the run's
        config cannot be read (exporting it then says why in one sentence)."""
        from huvi.export import run_formats

        try:
            return list(run_formats(self.run_dir(run_name)))
        except HuviError:
            return list(ALL_EXPORT_FORMATS)

    def formats(self, run_name: str | None, fmt: str | None) -> gr.Radio:
        """The Format choices for the picked run, keeping the picked format when its family has it."""
        choices = self.format_choices(run_name)
        return gr.Radio(choices=choices, value=fmt if fmt in choices else choices[0])

    @user_errors
    def export(self, run_name: str, fmt: str, merge: bool):
        """(files: the zip, the LoRA files and the card; the card as Markdown; the metadata; the zip's
        download button) of a new export of the run. It replaces the run's earlier export of that kind."""
        from huvi.bundle import bundle_export
        from huvi.export import export_run

        run_dir = self.run_dir(run_name)
        kind = f"{fmt}-merged" if merge else fmt
        folder = run_dir / "export" / kind
        if folder.exists():
            shutil.rmtree(folder)  # derived files: a new export replaces the previous one of the same kind
        name = f"{run_dir.name}-{kind}"
        result = export_run(run_dir, fmt, folder / f"{name}.safetensors", merge=bool(merge))
        bundle = bundle_export(result, run_dir, folder / f"{name}.zip")
        card = Path(result.card).read_text(encoding="utf-8")
        files = [str(bundle), *(str(f) for f in result.files), str(result.card)]
        download = gr.DownloadButton(f"⇣ Download all: {bundle.name} (LoRA files, model card, config)", value=str(bundle), visible=True)
        return files, without_front_matter(card), dict(result.metadata), download
