"""Nothing saved is lost to a bad file, a bad rating or a bad name, and the app serves only its
own folders (docs/RELIABILITY.md).

A bad-input corpus, built here from small files, goes through the library (`add_clip`,
`check_category`, `set_score`, `Workspace.create_category`), the CLI (`check --clips`, `check
--category`) and the app's upload handler; each file gets one sentence and nothing saved changes.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import pytest
from helpers import BAD_CASES, folder_snapshot, tiny_config, truncate
from PIL import Image

import huvi.workspace as workspace_module
from huvi.catalogue import PresetChoice
from huvi.category import clip_frames
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.errors import HuviError
from huvi.io import write_json
from huvi.jobs import Jobs
from huvi.synthetic import moving_square
from huvi.video import write_clip
from huvi.workspace import Workspace, add_clip, set_score

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `ui` sits beside `huvi` at the repository root

gr = pytest.importorskip("gradio", reason="the app's handlers need gradio (pip install -r requirements.txt)")
from ui.category import CategoryHandlers
from ui.common import Context
from ui.rating import RateHandlers

PRESET = "tiny"  # 24 frames at stride 1 of 32x32: a clip needs 24 frames
LIMIT = 2**20  # the upload size limit while these tests run (the real one is 500 MB)


# the corpus ----------------------------------------------------------------------------------------
def _clip(frames: int, seed: int) -> Callable[[Path], None]:
    return lambda path: write_clip(path, moving_square(1, seed=seed, frames=frames, size=32))


def _text(path: Path) -> None:
    path.write_text("this is a text file, not a video\n" * 20)


def _truncated(path: Path) -> None:
    _clip(32, seed=301)(path)
    truncate(path)  # the index (moov) of an MP4 comes last: half a file has none


def _eight_k(path: Path) -> None:
    """24 frames of 7680x4320 (8K): ffmpeg makes them, so they never pass through this process."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    source = "color=c=0x336699:size=7680x4320:rate=8:duration=3"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)


def _portrait(path: Path) -> None:
    write_clip(path, moving_square(1, seed=302, frames=32, size=40)[:, :, 8:32])  # (32, 40, 24, 3): 24 wide, 40 high


def _image(path: Path) -> None:
    Image.fromarray(moving_square(1, seed=303, frames=1, size=32)[0]).save(path, format="PNG")


def _image_named_mp4(path: Path) -> None:
    _image(path.with_suffix(".png"))
    path.with_suffix(".png").rename(path)


def _oversized(path: Path) -> None:
    path.write_bytes(b"\0" * (LIMIT + 1))


@dataclass(frozen=True)
class Upload:
    make: Callable[[Path], None]
    says: str  # a fragment of the sentence it gets; "" when the file is accepted
    kept: int = 0  # frames the tiny preset keeps of an accepted file (26 at most)


# One file per case; the names are what the sentences name. good_again.mp4 has good.mp4's bytes.
CORPUS: dict[str, Upload] = {
    "notes.mp4": Upload(_text, "notes.mp4: could not be decoded as a video (OSError); re-encode it as an H.264 MP4."),
    "truncated.mp4": Upload(_truncated, "truncated.mp4: could not be decoded as a video"),
    "empty.mp4": Upload(lambda path: path.write_bytes(b""), "empty.mp4: the file is empty; upload the clip again."),
    "one_frame.mp4": Upload(_clip(1, seed=304), "one_frame.mp4: only 1 frame at stride 1, but 24 are needed; use a clip of at least 24 frames"),
    "short.mp4": Upload(_clip(10, seed=305), "short.mp4: only 10 frames at stride 1, but 24 are needed"),
    "photo.png": Upload(_image, "photo.png: not a supported clip type; use .mp4, .webm, .mov, .gif."),
    "photo_named.mp4": Upload(_image_named_mp4, "photo_named.mp4: only 1 frame at stride 1"),
    "huge.mp4": Upload(_oversized, "huge.mp4: 1.0 MB is over the 1 MB limit per clip; trim it or re-encode it smaller"),
    "eight_k.mp4": Upload(_eight_k, "", kept=24),  # 24 frames at stride 1
    "portrait.mp4": Upload(_portrait, "", kept=26),
    "good.mp4": Upload(_clip(32, seed=306), "", kept=26),
}
DUPLICATE = "good_again.mp4"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, case in CORPUS.items():
        case.make(folder / name)
    shutil.copyfile(folder / "good.mp4", folder / DUPLICATE)
    return folder


@pytest.fixture(autouse=True)
def small_limit(monkeypatch):
    monkeypatch.setattr(workspace_module, "MAX_CLIP_BYTES", LIMIT)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "data", tmp_path / "runs")
    ws.categories.mkdir(parents=True)
    ws.runs.mkdir()
    return ws


@pytest.fixture
def context(ws) -> Context:
    return Context(ws, Jobs(ws.runs), PresetChoice(PRESET, "Tests run on the CPU."))


@pytest.fixture
def handlers(context) -> CategoryHandlers:
    """The Category tab's handlers."""
    return CategoryHandlers(context.ws, context.jobs, context.preset)


@pytest.fixture
def rating(context) -> RateHandlers:
    """The Rate tab's handlers."""
    return RateHandlers(context.ws, context.jobs, context.preset)


def one_sentence(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and message.endswith(".")


def uploads(corpus: Path) -> list[Path]:
    return [corpus / name for name in [*CORPUS, DUPLICATE]]


def expected(name: str) -> str:
    """The start of the sentence the library and the app give `name` ("" when it is accepted)."""
    return f"{DUPLICATE} is already in" if name == DUPLICATE else CORPUS[name].says


# the corpus through the library, the CLI and the app ---------------------------------------------
def test_each_upload_gets_its_sentence_from_the_library_and_nothing_saved_changes(ws, corpus):
    root = ws.create_category("corpus", "a square sliding")
    data = tiny_config().data
    for path in uploads(corpus):
        before = folder_snapshot(root)
        try:
            name = add_clip(root, path, None, data)
        except HuviError as err:
            assert expected(path.name) and expected(path.name) in str(err) and one_sentence(str(err)), str(err)
            assert folder_snapshot(root) == before, f"{path.name} changed the category although it was refused"
            continue
        assert not expected(path.name), f"{path.name} was accepted: {name}"
        after = folder_snapshot(root)
        assert set(after) - set(before) == {f"clips/{name}"} and all(after[k] == v for k, v in before.items())
    assert sorted(p.name for p in (root / "clips").iterdir()) == ["eight_k.mp4", "good.mp4", "portrait.mp4"]


def test_check_clips_gives_every_file_one_line_and_no_traceback(corpus, capsys):
    assert main(["check", "--clips", str(corpus), "--preset", PRESET]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    lines = out.splitlines()
    files = sorted(p.name for p in corpus.iterdir())
    assert len(lines) == len(files)
    for line, name in zip(lines, files):
        case = CORPUS["good.mp4" if name == DUPLICATE else name]  # each file alone: a copy is a good clip
        if case.says:
            assert line.startswith(f"error: {case.says}") and one_sentence(line), line
        else:
            assert line == f"ok: {name}: {case.kept} frames at stride 1 fit preset {PRESET}.", line
    assert err.splitlines() == [f"8 of {len(files)} files cannot be added as clips."]
    assert "Traceback" not in out + err


def test_a_folder_or_a_broken_link_given_as_a_clip_gets_a_sentence(tmp_path, capsys):
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(HuviError, match=r"^dir.mp4: is a folder, not a clip; give the video files in it\.$"):
        workspace_module.check_clip(tmp_path / "dir.mp4", tiny_config().data)
    assert main(["check", "--clips", str(tmp_path), "--preset", "tiny"]) == EXIT_BAD_INPUT  # a folder: its files
    assert capsys.readouterr().out.splitlines() == ["error: link.mp4: file not found."]


def test_check_of_a_folder_without_category_json_reports_every_file(corpus, tmp_path, capsys):
    folder = tmp_path / "Gitarre-ü"  # not a category: a plain folder, with a non-ASCII name
    shutil.copytree(corpus, folder)
    assert main(["check", "--category", str(folder), "--preset", PRESET]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "error: Gitarre-ü has no category.json; create one with a prompt and a score per clip."
    assert len(lines) == 1 + len(list(corpus.iterdir()))
    assert sum(line.startswith("ok: ") for line in lines) == 4 and "Traceback" not in out + err
    assert err.splitlines() == [f"{folder}: 9 problem(s) to fix before training."]


def test_check_names_a_clip_that_is_in_a_category_twice(category_copy, capsys):
    name = min(json.loads((category_copy / "category.json").read_text())["scores"])
    shutil.copyfile(category_copy / "clips" / name, category_copy / "clips" / "copy.mp4")
    meta = json.loads((category_copy / "category.json").read_text())
    meta["scores"]["copy.mp4"] = 3
    (category_copy / "category.json").write_text(json.dumps(meta))
    assert main(["check", "--category", str(category_copy), "--preset", PRESET]) == 0
    out, _ = capsys.readouterr()
    assert f"warning: {name} is the same file as copy.mp4; remove one of them (a clip compared with itself teaches nothing)." in out.splitlines()


@pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")  # gr.Warning outside a browser session
def test_the_upload_handler_names_each_refused_file_and_keeps_the_rest(handlers, ws, corpus):
    root = ws.create_category("corpus", "a square sliding")
    before = folder_snapshot(root)
    summary, cleared, report = handlers.add_clips("corpus", [str(p) for p in uploads(corpus)], PRESET)
    assert cleared is None and "**3 clips** in `corpus`" in summary
    added, refused = report.split("\n\n")
    assert added.startswith("✔ Added 3 clips: `eight_k.mp4`, `portrait.mp4`, `good.mp4`.")
    lines = refused.splitlines()
    assert lines[0] == "✖ Refused 9 files (the others were kept):"
    refusals = [p.name for p in uploads(corpus) if expected(p.name)]
    assert len(lines[1:]) == len(refusals)
    for line, name in zip(lines[1:], refusals):
        assert line.startswith("- ") and expected(name) in line and one_sentence(line[2:]), line
    after = folder_snapshot(root)
    assert all(after[k] == v for k, v in before.items())  # category.json untouched: no ratings yet
    assert set(after) - set(before) == {"clips/eight_k.mp4", "clips/portrait.mp4", "clips/good.mp4"}

    _, _, report = handlers.add_clips("corpus", [str(corpus / "good.mp4")], PRESET)  # later, once more
    assert report == "✖ Refused 1 file:\n- good.mp4 is already in corpus as good.mp4; it was not added again."
    assert folder_snapshot(root) == after


def test_an_8k_clip_is_shrunk_by_ffmpeg_while_it_is_decoded(corpus):
    tracemalloc.start()
    try:
        frames = clip_frames(corpus / "eight_k.mp4", tiny_config().data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames.shape == (24, 32, 32, 3)  # (f, h, w, 3): 24 frames at stride 1, at the preset's size
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB in Python while decoding: full 8K frames (100 MB each) came through"


def test_a_portrait_clip_is_centre_cropped_to_the_presets_size(corpus):
    frames = clip_frames(corpus / "portrait.mp4", tiny_config().data)
    assert frames.shape == (26, 32, 32, 3)  # (f, h, w, 3): 24x40 covered to 32x53, then cropped


# category-level cases through the app (the library and the CLI: tests/helpers.py BAD_CASES) --------
def rated_category(ws: Workspace, name: str, count: int) -> Path:
    """`count` different clips rated 5 and 1 by turns. One clip is encoded; each copy ends in its own
    MP4 "free" box (ignored by decoders), so the files differ as different uploads do."""
    root = ws.create_category(name, "a square sliding")
    clip = root / "clips" / "c00.mp4"
    write_clip(clip, moving_square(1, seed=400, frames=24, size=16))
    data = clip.read_bytes()
    for i in range(1, count):
        (root / "clips" / f"c{i:02d}.mp4").write_bytes(data + struct.pack(">I4sI", 12, b"free", i))  # (size, type, payload)
    write_json(root / "category.json", {"prompt": "a square sliding", "scores": {f"c{i:02d}.mp4": 5 if i % 2 == 0 else 1 for i in range(count)}})
    return root


@pytest.mark.parametrize("count, advice, problem", [(3, "⚠ Add 5 more", "has 3 usable rated clips; add clips and rate them until at least 4 are rated"), (40, "⚠ More than the 8–16 clips", "has 40 rated clips; the method is tuned for 8-16")])
def test_too_few_and_many_clips_get_advice_in_the_app(ws, handlers, rating, count, advice, problem, capsys):
    root = rated_category(ws, f"n{count}", count)
    assert advice in handlers.clip_summary(root.name)
    assert problem in rating.summary(root.name)
    assert main(["check", "--category", str(root), "--preset", PRESET]) == (EXIT_BAD_INPUT if count < 4 else 0)
    assert problem in capsys.readouterr().out


def test_unrated_clips_are_asked_to_be_rated_not_added(ws, rating):
    """Eight clips there but none rated: the advice is to rate them, not to add clips."""
    root = rated_category(ws, "unrated", 8)
    write_json(root / "category.json", {"prompt": "a square sliding", "scores": {"c00.mp4": 5}})
    assert "has 1 usable rated clips; rate at least 3 more of its 7 unrated clips 1-5 (the app's Rate tab" in rating.summary("unrated")
    assert "add clips" not in rating.summary("unrated")


def test_bad_ratings_and_all_equal_ratings_in_the_app(ws, handlers, rating):
    root = rated_category(ws, "ratings", 4)
    name = min(p.name for p in (root / "clips").iterdir())
    before = folder_snapshot(root)
    for bad in (0, 6, "five", 4.5, True):
        with pytest.raises(gr.Error, match=rf"A rating must be a whole number from 1 to 5, not {bad!r}\."):
            rating.set_score("ratings", name, bad)
        with pytest.raises(HuviError, match="A rating must be a whole number from 1 to 5"):
            set_score(root, name, bad)
    assert folder_snapshot(root) == before
    for clip in sorted(p.name for p in (root / "clips").iterdir()):
        rating.set_score("ratings", clip, 3)
    assert "All clips of ratings have the same score, so no preference pair can be formed; give at least two clips different ratings." in rating.summary("ratings")


@pytest.mark.parametrize("case", ["missing_category_json", "malformed_json"])
def test_a_broken_category_json_is_one_sentence_in_the_app_and_left_as_it_is(ws, handlers, rating, category, corpus, case):
    root = ws.categories / "broken"
    shutil.copytree(category, root)
    BAD_CASES[case].mutate(root)
    before = folder_snapshot(root)
    message = "There is no category 'broken'" if case == "missing_category_json" else "is not valid JSON"
    with pytest.raises(gr.Error, match=message) as info:
        handlers.add_clips("broken", [str(corpus / "good.mp4")], PRESET)
    assert one_sentence(info.value.message)
    assert message in rating.summary("broken")
    assert folder_snapshot(root) == before


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "", "!!!"])
def test_unsafe_category_names_are_refused_and_nothing_is_written(ws, handlers, name):
    outside = folder_snapshot(ws.categories.parent)
    with pytest.raises(HuviError, match=r"is not allowed: use letters, digits, '-' and '_'|has no letter or digit"):
        ws.create_category(name, "a prompt")
    with pytest.raises(gr.Error) as info:
        handlers.create_category(name, "a prompt")
    assert one_sentence(info.value.message)
    assert folder_snapshot(ws.categories.parent) == outside


# what the app serves ------------------------------------------------------------------------------
def test_the_app_serves_files_from_its_data_and_run_folders_only(ws, context, tmp_path):
    from ui.app import build_app

    root = ws.create_category("served", "a square")
    demo = build_app(context)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, allowed_paths=[str(ws.categories), str(ws.runs)])
    try:
        def status(path: Path) -> int:
            try:
                with urllib.request.urlopen(f"{demo.local_url}gradio_api/file={path}") as response:
                    return response.status
            except urllib.error.HTTPError as err:
                return err.code

        (tmp_path / "secret.txt").write_text("not for the browser")
        assert status(root / "category.json") == 200
        assert status(tmp_path / "secret.txt") == 403
        assert status(REPO / "app.py") == 403
        assert status(Path("/etc/passwd")) == 403
        assert status(ws.categories / ".." / "secret.txt") == 403
    finally:
        demo.close()

