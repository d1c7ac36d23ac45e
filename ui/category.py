"""Handlers of the Category tab: pick or create a category, its prompt, its clips (add, check,
remove) and a look at what training sees of a clip."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from huvi.category import ADVISED_CLIPS, MIN_CLIPS, check_category
from huvi.clip_view import training_view
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.families import frames_per_latent
from huvi.workspace import ClipEntry, add_clip, list_clips, read_meta, remove_clip, set_prompt, source_clips
from ui.common import Context, dropdown, plural, user_errors
from ui.rating import rating_summary


class CategoryHandlers(Context):
    def clip_summary(self, name: str | None) -> str:
        """The Category tab's line: how many clips people supplied, and what to do about the count."""
        if not name:
            return "No category yet: create one above."
        try:
            entries = list_clips(self.category_root(name))
        except HuviError as err:
            return f"✖ {err}"
        count = sum(not e.generated for e in entries)
        made = len(entries) - count
        low, high = ADVISED_CLIPS
        head = f"**{plural(count, 'clip')}** in `{name}`" + (f" (and {made} made for DenseDPO pairs, below)." if made else ".")
        if count == 0:
            advice = f"No clips yet: drop {low}–{high} clips of one action in the box above."
        elif count < low:
            advice = (
                f"⚠ Add {low - count} more: the method is tuned for {low}–{high} clips of one action; fewer clips give few "
                f"preference pairs (training needs at least {MIN_CLIPS} rated clips)."
            )
        elif count > high:
            advice = (
                f"⚠ More than the {low}–{high} clips the method is tuned for: every clip still trains, but rating takes "
                "longer and near-duplicates add little; consider removing some."
            )
        else:
            advice = f"✔ Within the {low}–{high} clips the method is tuned for. Next: rate them in the **Rate** tab."
        return f"{head} {advice}"

    def category_view(self, name: str | None) -> tuple[str, str, str]:
        """(prompt, clip summary, rating summary) of the picked category."""
        if not name:
            return "", self.clip_summary(None), rating_summary(self, None)
        try:
            prompt = read_meta(self.category_root(name)).get("prompt", "")
        except HuviError as err:
            return "", f"✖ {err}", f"✖ {err}"
        return prompt, self.clip_summary(name), rating_summary(self, name)

    @user_errors
    def create_category(self, name: str, prompt: str):
        """Create the category (its name made safe: "My Bunny Clips" -> "My-Bunny-Clips"); returns the
        Category tab's and the Train tab's pickers on it, and two cleared fields."""
        root = self.ws.create_category(name, prompt)
        renamed = f" (a folder name: letters, digits, '-' and '_' only, so {name.strip()!r} became {root.name!r})" if root.name != name.strip() else ""
        gr.Info(f"Created {root.name}{renamed}; now add 8-16 clips and rate them.", duration=10)
        return self.category_dropdown(root.name, keep=False), self.category_dropdown(root.name, keep=False), "", ""

    @user_errors
    def save_prompt(self, name: str, prompt: str) -> str:
        set_prompt(self.category_root(name), prompt)
        gr.Info("Prompt saved.")
        return self.clip_summary(name)

    def clips(self, name: str | None) -> list[ClipEntry]:
        """Every clip, the ones DenseDPO made included."""
        try:
            return list_clips(self.category_root(name)) if name else []
        except HuviError:
            return []

    def clips_to_rate(self, name: str | None) -> list[ClipEntry]:
        """The clips people supplied (not those `dense-pairs` made): the Rate tab's, and the Category tab's main list."""
        try:
            return source_clips(self.category_root(name)) if name else []
        except HuviError:
            return []

    @staticmethod
    def clip_caption(entry: ClipEntry) -> str:
        """Frame count and size as stored (and whether a pair uses it), or why the clip does not decode."""
        try:
            info = str(entry.info)
        except HuviError as err:
            return f"✖ {err}"
        if entry.generated:
            return f"{info} · made for a DenseDPO pair"
        return f"{info} · in a pair (DenseDPO tab)" if entry.paired else info

    @user_errors
    def add_clips(self, name: str, files: list[str] | None, preset: str):
        """Decode and copy each upload in; returns (clip summary, cleared upload box, report).

        A file that is refused is named in the report with its reason; the others are kept."""
        root = self.category_root(name)
        if not files:
            raise HuviError("Choose or drop one or more clips to upload first.")
        read_meta(root)  # a category.json broken by hand is one sentence, not one per file
        data = load_config(preset or self.preset.name).data
        added, refused = [], []
        for file in files:
            path = Path(file)  # Gradio keeps the uploaded file's own name
            try:
                added.append(add_clip(root, path, None, data, filename=path.name))
            except HuviError as err:
                message = str(err)
                refused.append(message if message.startswith(path.name) else f"{path.name}: {message}")
        lines = []
        if added:
            lines.append(f"✔ Added {plural(len(added), 'clip')}: {', '.join(f'`{n}`' for n in added)}. Rate them in the **Rate** tab.")
            gr.Info(f"Added {plural(len(added), 'clip')}.")
        if refused:
            kept = " (the others were kept)" if added else ""
            lines.append(f"✖ Refused {plural(len(refused), 'file')}{kept}:\n" + "\n".join(f"- {m}" for m in refused))
            for message in refused:
                gr.Warning(message, duration=10)  # the report below the upload box keeps it
        return self.clip_summary(name), None, "\n\n".join(lines)

    @user_errors
    def remove_clip(self, name: str, clip: str, version: int):
        if version < 0:  # the user cancelled the confirmation
            return gr.skip(), gr.skip()
        remove_clip(self.category_root(name), clip)
        gr.Info(f"Removed {clip}.")
        return self.clip_summary(name), version + 1

    @user_errors
    def check_clips(self, name: str, preset: str) -> str:
        root = self.category_root(name)
        cfg = load_config(preset or self.preset.name)
        problems = check_category(root, cfg.data, frames_per_latent(cfg.model))
        errors = [p.message for p in problems if p.level == "error"]
        head = (
            f"✔ Every clip decodes and is long enough for preset `{cfg.preset}` ({cfg.data.frames} frames at stride {cfg.data.stride})."
            if not errors
            else f"✖ {len(errors)} problem{'s' if len(errors) > 1 else ''} to fix before training with preset `{cfg.preset}`:"
        )
        return "\n".join([head] + [f"- {'⚠ ' if p.level == 'warning' else ''}{p.message}" for p in problems])

    # API twins of the per-clip controls, with the types gr.api reads
    def api_list_clips(self, category: str) -> list[dict]:
        """Clips of a category: name, rating (None: unrated), frames, width and height (None with an
        "error" when the clip does not decode), and "generated" (made by DenseDPO's dense-pairs)."""
        out = []
        for entry in self.clips(category):
            try:
                info = entry.info
                facts = {"frames": info.frames, "width": info.width, "height": info.height}
            except HuviError as err:
                facts = {"frames": None, "width": None, "height": None, "error": str(err)}
            out.append({"name": entry.name, "score": entry.score, "generated": entry.generated} | facts)
        return out

    def api_remove_clip(self, category: str, clip: str) -> str:
        """Delete a clip and its rating; returns the Category tab's clip summary."""
        return self.remove_clip(category, clip, 0)[0]

    # what training sees ------------------------------------------------------------------------
    def seen_clip_dropdown(self, name: str | None, value: str | None = None) -> gr.Dropdown:
        return dropdown([e.name for e in self.clips_to_rate(name)], value, keep=True)

    @user_errors
    def training_view(self, name: str | None, clip: str | None, preset: str | None):
        """(the first frame with the kept rectangle, the cached frames with captions, a note) of a clip
        under the picked preset."""
        if not name or not clip:
            return None, [], "Pick a clip to see the frames training reads from it."
        cfg = load_config(preset or self.preset.name)
        data = cfg.data
        view = training_view(self.category_root(name) / "clips" / clip, data)
        starts = len(view.frames) - view.window + 1 if view.enough else 0
        frames = [(frame, f"{i * view.stride}" + (" · condition" if i == 0 else "") + ("" if i < view.window else " · spare")) for i, frame in enumerate(view.frames)]
        (width, height), (left, top, right, bottom) = view.stored, view.crop
        kept = "the whole frame" if (right - left, bottom - top) == (width, height) else f"the centre {right - left}×{bottom - top}"
        lines = [
            f"**Stored {width}×{height}**; preset `{cfg.preset}` keeps {kept} (outlined) and scales it to **{data.width}×{data.height}**.",
            ("It reads every frame" if data.stride == 1 else f"It reads one frame in {data.stride} (frames 0, {data.stride}, {2 * data.stride}, …)")
            + f", up to {data.max_cached_frames} ({len(view.frames)} here): a training clip is **{view.window} of them in a row**, "
            + (
                f"starting at any of the first {starts} (`data.temporal_crop`)."
                if view.temporal_crop and starts > 1
                else "always the first ones."
            )
            + " Its first frame is the clean condition; the model learns the motion of the others.",
        ]
        if not view.enough:
            lines.append(f"✖ Too short for this preset: {len(view.frames)} of the {view.window} frames it needs.")
        return view.first, frames, "\n\n".join(lines)
