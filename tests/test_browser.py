"""The app in a real browser: `python app.py` in its own process, driven by headless Chromium.

One user's session, in the order of the tabs: make a category (its name with spaces made safe, a
refusal that keeps the typed text), upload eight clips and a broken file, look at what training
sees of a clip (for SD1.5's and Wan's CPU presets, picked in the model picker), rate the clips, look at the pairs with their thumbnails and pick their seed, train a
run of the demo model (the CPU default) with a second preview prompt (a refused start first; the starting phase, the disabled
Start and the page reloaded while it trains, the form then showing the run's settings and the
lists read again; both stages' plots and the preview gallery; then the Wan family picked, its
settings filled in), generate with it
(the run's own settings shown, its earlier clips listed), export it and download the zip, see it in
the Runs tab, and label a DenseDPO pair whose clips stay out of the Rate tab. A screenshot of every
tab goes to $HUVI_ARTIFACTS/screenshots/ (default test-artifacts/screenshots/).

Needs Debian's chromium (`apt-get install -y chromium`) and pip's playwright; never
`playwright install`. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from huvi.pairs import form_pairs
from huvi.synthetic import moving_square
from huvi.video import write_clip

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TRAIN_TIMEOUT_MS = 240_000
RATINGS = (5, 5, 4, 4, 2, 2, 1, 1)  # 8 clips: 28 combinations, 4 of them ties, 8 of them 1 apart -> 16 pairs at the demo preset's rating gap 2
# The page is reloaded once the job has logged a step: the steps left (about 30 s on 2 shared
# cores) must outlast the reload (about 3 s). Preview clips at the last DPO step, one per prompt.
MOTION_STEPS, DPO_STEPS, PREVIEW_EVERY = 3, 6, 6
PREVIEW_PROMPT = "a square sliding left"  # previews render it beside the category's prompt
SD15, WAN = "SD1.5 + AnimateDiff", "Wan 2.1 / 2.2 (experimental)"  # the model picker's families

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run the browser tests", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements-dev.txt) to run the browser tests")
expect = playwright.expect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("HUVI_ARTIFACTS") or REPO / "test-artifacts") / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`python app.py --port N` with a fresh HUVI_HOME; yields (url, categories, runs)."""
    root = tmp_path_factory.mktemp("browser")
    home, runs = root / "data", root / "runs"
    port = free_port()
    env = os.environ | {"HUVI_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HUVI_RUNS", None)
    with open(root / "app.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the app did not start:\n{(root / 'app.log').read_text()}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/", home, runs
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        for job in runs.glob("*/job.json"):  # training jobs outlive the app on purpose; not this one's
            try:
                os.killpg(json.loads(job.read_text())["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError, KeyError, json.JSONDecodeError):
                pass


@pytest.fixture(scope="module")
def page(app, tmp_path_factory):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.set_default_timeout(30_000)
        # The suite runs on two workers: the other one's training shares the cores, and the first
        # render of 12 clip cards took over Playwright's default 5 s of `expect` on a loaded machine.
        expect.set_options(timeout=30_000)
        page.goto(app[0])
        yield page
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def shown(page, text: str, exact: bool = False):
    """`text` on the tab on show (hidden tabs are in the page too)."""
    return page.get_by_text(text, exact=exact).locator("visible=true").first


def cards(page):
    """The clip cards of the tab on show."""
    return page.locator(".huvi-clip:visible")


def card(page, clip: str):
    return cards(page).filter(has_text=clip)


def wait_until(predicate, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def category_picker(page):
    """The category list of the tab on show."""
    return page.get_by_label("Category", exact=True).locator("visible=true").first


def pick_category(page, name: str) -> None:
    """Pick `name` in the Category tab's list."""
    category_picker(page).click()
    page.get_by_role("option", name=name, exact=True).click()
    shown(page, f"in {name}").wait_for()  # the clip summary of the picked category


def pick_family(page, title: str) -> None:
    """Pick a model family in the model picker of the tab on show."""
    page.get_by_role("radio", name=title, exact=True).locator("visible=true").first.check()


def gallery(page, label: str):
    """The gallery labelled `label` on the tab on show."""
    return page.locator(".block:visible", has=page.locator("[data-testid=block-label]", has_text=label)).last


def app_log(home: Path) -> Path:
    return home.parent / "app.log"


def scores(home: Path, category: str) -> dict:
    return json.loads((home / category / "category.json").read_text())["scores"]


def no_error_pills(page) -> None:
    """A refused action leaves its fields as they were: no red "Error" pill over any component."""
    expect(page.locator(".block span.error:visible")).to_have_count(0)


def test_the_whole_loop_in_a_browser(app, page, shots, tmp_path):
    url, home, runs = app
    category = "My-Bunny-Clips"

    # 1 · Category: the demo category is there, each clip with its frame count and size; Remove asks first
    page.get_by_text("Demo preset").wait_for()  # the banner: no GPU here, so the demo model
    shown(page, "12 clips").wait_for()
    expect(cards(page)).to_have_count(12)
    expect(card(page, "left_0_01.mp4").get_by_text("32 frames · 64×64")).to_be_visible()
    removed = "right_0_10.mp4"
    page.once("dialog", lambda dialog: dialog.dismiss())
    card(page, removed).get_by_role("button", name="Remove").click()
    page.wait_for_timeout(800)
    assert (home / "demo" / "clips" / removed).is_file()
    page.once("dialog", lambda dialog: dialog.accept())
    card(page, removed).get_by_role("button", name="Remove").click()
    expect(cards(page)).to_have_count(11)
    assert not (home / "demo" / "clips" / removed).exists() and removed not in scores(home, "demo")

    # a name with spaces becomes a safe folder name, and the page says so
    page.get_by_text("New category").click()
    page.get_by_label("Name").fill("My Bunny Clips")
    page.get_by_label("Prompt", exact=True).fill("a square sliding across the frame")
    page.get_by_role("button", name="Create").click()
    page.get_by_text(f"'My Bunny Clips' became '{category}'").wait_for()
    shown(page, "No clips yet").wait_for()
    assert json.loads((home / category / "category.json").read_text()) == {"prompt": "a square sliding across the frame", "scores": {}}
    # a refused name keeps what was typed
    page.get_by_label("Name").fill("My Bunny Clips")
    page.get_by_label("Prompt", exact=True).fill("again")
    page.get_by_role("button", name="Create").click()
    page.get_by_text(f"A category named '{category}' already exists").wait_for()
    no_error_pills(page)
    assert page.get_by_label("Name").input_value() == "My Bunny Clips" and page.get_by_label("Prompt", exact=True).input_value() == "again"

    uploads = tmp_path / "uploads"  # eight clips and a broken file, in one drop
    uploads.mkdir()
    for i in range(len(RATINGS)):
        write_clip(uploads / f"square {i}.mp4", moving_square(1 if i < 4 else -1, seed=300 + i, frames=32, size=32))
    (uploads / "broken.mp4").write_text("not a video\n" * 20)
    page.locator('input[type="file"]').first.set_input_files([str(p) for p in sorted(uploads.iterdir())])
    page.get_by_text("Refused 1 file (the others were kept)").wait_for()
    expect(page.locator("li", has_text="broken.mp4: could not be decoded as a video")).to_be_visible()  # and a toast
    expect(cards(page)).to_have_count(8)
    expect(card(page, "square_0.mp4").get_by_text("32 frames · 32×32")).to_be_visible()
    shown(page, "8 clips").wait_for()
    assert sorted(p.name for p in (home / category / "clips").iterdir()) == [f"square_{i}.mp4" for i in range(8)]
    # what training sees of a clip: the kept part, the size, the frames read
    page.get_by_text("What training sees of a clip").click()
    seen = page.get_by_label("Clip", exact=True)
    seen.click()
    page.get_by_role("option", name="square_3.mp4").click()
    shown(page, "Stored 32×32").wait_for()
    page.get_by_text("a training clip is 8 of them in a row").wait_for()
    expect(gallery(page, "The frames training reads").locator(".caption-label")).to_have_count(10)  # frames 0, 3, ..., 27
    # the model picker: Wan's CPU preset reads 9 frames (1 + 4k for its causal VAE), no spare ones; back to SD1.5's demo
    pick_family(page, WAN)
    expect(page.get_by_label("Preset: the frames and size clips must fit")).to_have_value(re.compile(r"^wan-tiny · CPU · gives up "))
    shown(page, "a training clip is 9 of them in a row").wait_for()
    expect(gallery(page, "The frames training reads").locator(".caption-label")).to_have_count(9)
    pick_family(page, SD15)
    shown(page, "a training clip is 8 of them in a row").wait_for()
    page.screenshot(path=str(shots / "1-category.png"), full_page=True)

    # 2 · Rate: every clip playable, each rating saved as it is clicked
    open_tab(page, "2 · Rate")
    shown(page, "rate at least 4 more of its 8 unrated clips").wait_for()  # not "add clips": they are there
    expect(cards(page)).to_have_count(8)
    expect(cards(page).locator("video")).to_have_count(8)
    for i, score in enumerate(RATINGS):
        card(page, f"square_{i}.mp4").get_by_label(str(score), exact=True).check()
        wait_until(lambda i=i, score=score: scores(home, category).get(f"square_{i}.mp4") == score, f"the rating of square_{i}.mp4")
    shown(page, "16 preference pairs").wait_for()
    page.screenshot(path=str(shots / "2-rate.png"), full_page=True)

    # 3 · Pairs: count, every pair with its clips' thumbnails, who is left out; the seed picked here is the Train tab's
    open_tab(page, "3 · Pairs")
    shown(page, "16 preference pairs").wait_for()
    page.get_by_text("Equal ratings never pair").wait_for()
    page.get_by_text("Ratings less than 2★ apart never pair").wait_for()  # the demo preset's data.min_rating_gap
    page.get_by_label("Seed (the training run's seed)").fill("7")
    page.get_by_text("a run with seed 7").wait_for()
    first = form_pairs(scores(home, category), seed=7, min_gap=2)[0]  # the table is in the order training uses
    rows = page.locator(".huvi-pairs tbody tr:visible")
    expect(rows).to_have_count(16)  # all of them, no scroll box
    expect(rows.first).to_have_text(re.compile(rf"^\s*1\s*{re.escape(first.winner)}\s*\d★\s*{re.escape(first.loser)}\s*\d★\s*training\s*$"))
    wait_until(lambda: rows.first.locator("img").first.evaluate("img => img.complete && img.naturalWidth > 0"), "the thumbnails")
    page.screenshot(path=str(shots / "3-pairs.png"), full_page=True)

    # 4 · Train: a run of the demo model in the background; the page is reloaded while it trains
    open_tab(page, "4 · Train")
    assert category_picker(page).input_value() == category  # the category made in tab 1
    assert page.get_by_label("Seed (also decides the pair order)").input_value() == "7"
    page.get_by_label("Motion steps").fill(str(MOTION_STEPS))
    page.get_by_label("DPO steps").fill(str(DPO_STEPS))
    page.get_by_label("Preview clip every N steps (0: none)").fill(str(PREVIEW_EVERY))
    page.get_by_label("More preview prompts, one per line").fill(PREVIEW_PROMPT)
    page.get_by_label("Run name (a new folder under runs/)").click()  # blur: the command follows the fields
    page.locator(".huvi-command").get_by_text(f"--set motion.steps={MOTION_STEPS} --set dpo.steps={DPO_STEPS} --set seed=7").wait_for()
    run = page.get_by_label("Run name (a new folder under runs/)").input_value()
    # a refused start keeps every field as it was
    page.get_by_text("Advanced settings").click()
    more = page.get_by_label("More settings, one key=value per line")
    more.fill("dpo.nope=1")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Unknown setting dpo.nope").first.wait_for()
    no_error_pills(page)
    assert page.get_by_label("Run name (a new folder under runs/)").input_value() == run and more.input_value() == "dpo.nope=1"
    more.fill("")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Starting for \d+ s: ")).wait_for(timeout=TRAIN_TIMEOUT_MS)  # what the ~30 s before step 1 are doing
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()  # one job at a time, and the page says why
    shown(page, f"is busy (training {run}); one job runs at a time, so Start waits until it ends").wait_for()
    page.get_by_text(re.compile(r"Training the (motion|dpo) stage")).wait_for(timeout=TRAIN_TIMEOUT_MS)  # a step is logged
    shown(page, "Motion loss", exact=True).wait_for()  # the plot, drawn from the metrics so far
    page.get_by_text(f"/ {MOTION_STEPS + DPO_STEPS} steps").wait_for()  # the progress bar

    reloaded = time.time()
    page.reload()  # nothing lives in the page: the job is found again through its run folder, and the form follows it
    open_tab(page, "4 · Train")
    page.locator("h3", has_text="running").wait_for()
    expect(page.locator("h3", has_text=run)).to_be_visible()
    expect(page.get_by_role("button", name="Stop (checkpoint)")).to_be_enabled()
    open_tab(page, "5 · Generate")  # one job at a time, and the Generate tab says so (this machine has no GPU)
    shown(page, f"This machine is busy (training {run}).").wait_for()
    open_tab(page, "4 · Train")
    expect(page.get_by_label("Motion steps")).to_have_value(str(MOTION_STEPS))
    expect(page.get_by_label("DPO steps")).to_have_value(str(DPO_STEPS))
    expect(page.get_by_label("More preview prompts, one per line")).to_have_value(PREVIEW_PROMPT)
    assert category_picker(page).input_value() == category
    shown(page, f"The form holds the settings of {run}").wait_for()
    # the lists are read again on load (a category made in this session is offered), and the new run
    # name is made now, not when the app started
    category_picker(page).click()
    page.get_by_role("option", name=category).wait_for()
    page.keyboard.press("Escape")
    stamp = page.get_by_label("Run name (a new folder under runs/)").input_value().rsplit("-", 2)
    assert time.mktime(time.strptime(f"{stamp[1]}-{stamp[2]}", "%Y%m%d-%H%M%S")) >= int(reloaded) - 1, stamp

    total = MOTION_STEPS + DPO_STEPS
    page.locator("h3", has_text="done").wait_for(timeout=TRAIN_TIMEOUT_MS)
    page.get_by_text(re.compile(rf"✔ {total} / {total} steps \(100%\).* · finished \d\d:\d\d after ")).wait_for()
    expect(page.get_by_role("button", name="Start training")).to_be_enabled()
    for title in ("Motion loss", "DPO loss", "Implicit accuracy (DPO)", "Reward margin (DPO)"):
        shown(page, title).wait_for()
    previews = gallery(page, "Previews (2, fixed seed)")  # the last DPO step, with each prompt (tests/test_generate.py: every step)
    expect(previews.locator(".caption-label")).to_have_text([f"dpo · step {DPO_STEPS}", f"dpo · step {DPO_STEPS} · {PREVIEW_PROMPT}"])
    assert (runs / run / "adapters" / "dpo.safetensors").is_file()
    assert "--set seed=7" in json.loads((runs / run / "job.json").read_text())["command"]
    page.screenshot(path=str(shots / "4-train.png"), full_page=True)
    # the model picker: the Wan family starts at its CPU preset, whose settings fill the form and the command
    pick_family(page, WAN)
    expect(page.get_by_label("DPO steps")).to_have_value("200")  # wan-tiny's
    page.locator(".huvi-command").get_by_text("--preset wan-tiny").wait_for()
    shown(page, "VRAM tier CPU · against wan22-5b, it gives up the real model").wait_for()
    page.screenshot(path=str(shots / "4-train-wan.png"), full_page=True)

    # 5 · Generate with and without the DPO adapter, side by side; the run's own settings are shown
    open_tab(page, "5 · Generate")
    expect(page.get_by_text("is busy")).to_have_count(0)
    assert page.get_by_label("Trained run").input_value() == run
    steps = page.get_by_label("Steps (the run's: 15)")
    expect(steps).to_have_value("15")
    page.get_by_text("a shape is drawn, of the shape and colour the prompt names").wait_for()
    steps.fill("2")
    page.get_by_label("Also render without DPO, side by side").check()
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("Saved to").wait_for(timeout=120_000)
    expect(gallery(page, "Earlier clips of this run (1)").locator(".caption-label")).to_have_text(["seed 0 · 2 steps · DPO 1.0 · 'a square sliding across the frame'"])
    page.screenshot(path=str(shots / "5-generate.png"), full_page=True)

    # 6 · Export a diffusers LoRA and download everything as one zip, the model card in it
    open_tab(page, "6 · Export")
    page.get_by_label("diffusers").check()
    page.get_by_role("button", name="Export").click()
    page.get_by_role("heading", name="Training").wait_for(timeout=60_000)  # the model card
    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile("Download all")).click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert sorted(archive.namelist()) == sorted([f"{run}-diffusers.safetensors", f"{run}-diffusers.motion.safetensors", "README.md", "config.yaml", "run.json"])
        assert "| Setting | Value |" in archive.read("README.md").decode()
    page.screenshot(path=str(shots / "6-export.png"), full_page=True)

    # 7 · Runs: every run, how it ended
    open_tab(page, "7 · Runs")
    expect(page.locator("[role=row]:visible", has_text=run)).to_contain_text("finished")
    page.screenshot(path=str(shots / "7-runs.png"), full_page=True)

    # DenseDPO: an aligned pair made with the run, labelled segment by segment. The tab works on
    # the Category tab's category, which the reload above set back to the first one (demo).
    open_tab(page, "1 · Category")
    pick_category(page, category)
    open_tab(page, "DenseDPO · segment labels")
    shown(page, f"Category {category}").wait_for()
    shown(page, "New aligned pairs", exact=True).click()  # the accordion (its button is hidden until it opens)
    assert page.get_by_label("Run whose model denoises (motion stage trained)").input_value() == run
    expect(page.get_by_label("Segments per pair (the run's: 8 frames / 4 = 2)")).to_have_value("2")
    sources = page.get_by_label("Source clips (none chosen: every rated clip)")
    sources.click()
    sources.fill("square_0.mp4")
    sources.press("Enter")
    page.get_by_role("button", name="Make aligned pairs").click()
    a, b = "square_0.aligned-s0-a.mp4", "square_0.aligned-s0-b.mp4"
    wait_until(lambda: len(json.loads((home / category / "category.json").read_text()).get("pairs", [])) == 1, "the aligned pair", timeout=240)
    expect(page.get_by_label("Pair", exact=True)).to_have_value(f"1. {a} vs {b} — 0/2 labelled", timeout=30_000)
    # the generated clips are not clips to rate, and the Rate tab's warnings follow the labels
    open_tab(page, "2 · Rate")
    shown(page, "has no label yet").wait_for()
    expect(cards(page)).to_have_count(8)
    open_tab(page, "DenseDPO · segment labels")
    page.get_by_test_id("first (left) · second (right), in sync-player").wait_for()  # both clips, side by side, over the timeline
    page.locator(".huvi-seg-choice", has_text="Segment 1 · frames 0–11").get_by_label("first (left) better").check()
    wait_until(lambda: json.loads((home / category / "category.json").read_text())["pairs"][0]["segments"] == ["a", None], "the segment label")
    shown(page, "1 of 2 segments labelled").wait_for()
    page.screenshot(path=str(shots / "8-densedpo.png"), full_page=True)
    open_tab(page, "2 · Rate")
    shown(page, "Ready to train").wait_for()
    expect(page.get_by_text("has no label yet")).to_have_count(0)
    open_tab(page, "1 · Category")
    shown(page, "Made for DenseDPO pairs (2)").wait_for()
    expect(cards(page)).to_have_count(10)

    page.goto(url)  # a name with nothing to keep is refused with its sentence, the typed text kept
    page.get_by_text("New category").click()
    page.get_by_label("Name").fill("!!!")
    page.get_by_label("Prompt", exact=True).fill("x")
    page.get_by_role("button", name="Create").click()
    shown(page, "has no letter or digit").wait_for()
    no_error_pills(page)
    assert page.get_by_label("Name").input_value() == "!!!"
    assert not page.errors, page.errors

    # the app's own output and the job's log are free of library noise and of advice that does not apply here
    log = app_log(home).read_text()
    assert "share=True" not in log and "--share" in log and "kernels" not in log
    job_log = (runs / run / "job.log").read_text()
    assert "kernels" not in job_log and "bitsandbytes" not in job_log
