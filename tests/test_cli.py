"""`python -m huvi`: exit codes, one-line errors, run folders left alone, a tiny train end to end."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import BAD_CASES, folder_snapshot, metric_rows
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.cli_args import build_parser
from huvi.runs import Run

REPO = Path(__file__).resolve().parent.parent


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def error_lines(text: str) -> list[str]:
    return [line for line in lines(text) if line.startswith("error:")]


def run_module(*args: str) -> subprocess.CompletedProcess:
    """`python -m huvi ARGS` in a real process (offline, with this session's cache dir)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "huvi", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# check -------------------------------------------------------------------------------------------
def test_check_passes_a_good_category(category, capsys):
    assert main(["check", "--category", str(category), "--preset", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert lines(out)[-1] == f"{category}: ready to train with preset tiny."
    assert [line for line in lines(out) if line.startswith("warning:")] == [
        "warning: squares has 6 rated clips; the method is tuned for 8-16."
    ]
    assert error_lines(out) == [] and "Traceback" not in err


def test_check_reports_each_bad_input(bad_category, capsys):
    assert main(["check", "--category", str(bad_category.root), "--preset", "tiny"]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    errors = error_lines(out)
    assert len(errors) == 1 and bad_category.message in errors[0]
    assert lines(err) == [f"{bad_category.root}: 1 problem(s) to fix before training."]
    assert "Traceback" not in out + err


def test_train_refuses_each_bad_input_with_one_line(bad_category, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["train", "--category", str(bad_category.root), "--out", str(out_dir), "--preset", "tiny", "--steps", "1"])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert bad_category.message in errors[0]
    assert "Traceback" not in out + err
    assert not (out_dir / "adapters").exists()


def test_a_failed_start_can_be_rerun_after_fixing_the_clip(category_copy, tmp_path, capsys):
    BAD_CASES["unreadable_clip"].mutate(category_copy)
    out_dir = tmp_path / "run"
    args = ["train", "--category", str(category_copy), "--out", str(out_dir), "--preset", "tiny", "--steps", "1"]
    assert main(args) == EXIT_BAD_INPUT
    capsys.readouterr()
    left = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    assert left == []


# train -------------------------------------------------------------------------------------------
def test_train_will_not_touch_an_existing_run(trained_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained_run.root, copy)
    before = folder_snapshot(copy)
    code = main(["train", "--category", str(trained_run.category), "--out", str(copy), "--preset", "tiny", "--steps", "2"])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    assert len(error_lines(err)) == 1 and "--resume" in error_lines(err)[0]
    assert "Traceback" not in err
    assert folder_snapshot(copy) == before


@pytest.mark.parametrize("extra", [["--set", "dpo.beta=2500"], ["--steps", "5"], ["--preset", "tiny"]])
def test_resume_refuses_new_settings(trained_run, tmp_path, capsys, extra):
    copy = tmp_path / "run"
    shutil.copytree(trained_run.root, copy)
    before = folder_snapshot(copy)
    code = main(["train", "--category", str(trained_run.category), "--out", str(copy), "--resume", *extra])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    errors = error_lines(err)
    assert len(errors) == 1 and "--resume" in errors[0] and "config.yaml" in errors[0]
    assert "Traceback" not in err
    assert folder_snapshot(copy) == before


def test_tiny_train_writes_the_run_folder(category, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="huvi")
    out_dir = tmp_path / "run"
    code = main(["train", "--category", str(category), "--out", str(out_dir), "--preset", "tiny", "--steps", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = Run(out_dir)
    for path in (run.config_path, run.metrics_path, run.adapter_path("motion"), run.adapter_path("dpo")):
        assert path.is_file(), path
    cfg = run.read_config()
    assert (cfg.preset, cfg.motion.steps, cfg.dpo.steps) == ("tiny", 2, 2)
    rows = metric_rows(out_dir)
    assert [(r["stage"], r["step"]) for r in rows] == [("motion", 1), ("motion", 2), ("dpo", 1), ("dpo", 2)]
    printed = [json.loads(line) for line in lines(out)]
    assert printed[-1] == rows[-1]
    assert printed[-1]["stage"] == "dpo" and printed[-1]["step"] == 2
    assert printed[0] == rows[1]  # the motion stage's last row comes first
    # the end says where the adapters are and what to run next, on stderr (stdout stays JSON)
    tail = lines(err)[-4:]
    assert tail[:2] == [f"Adapters written to {out_dir / 'adapters'}: motion.safetensors, dpo.safetensors.", "Next:"]
    assert tail[2].startswith(f"  python -m huvi generate --run {out_dir} --prompt ") and tail[2].endswith(f" --compare --out {out_dir / 'samples' / 'clip.mp4'}")
    assert tail[3] == f"  python -m huvi export --run {out_dir} --out {out_dir / 'export' / 'run.safetensors'} --zip"
    logged = caplog.text
    assert "CPU threads: " in logged and "fp32 precision" in logged and "no precision" not in logged


def test_a_gpu_preset_on_a_cpu_is_warned_about(category, tmp_path, caplog, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level(logging.WARNING, logger="huvi")
    code = main(["train", "--category", str(category), "--out", str(tmp_path / "run"), "--preset", "sd15-12gb", "--steps", "1"])
    assert code == EXIT_BAD_INPUT and "hf download" in capsys.readouterr().err  # offline, it then stops at the missing weights
    assert "preset sd15-12gb is for a GPU and there is none here: each step takes minutes on the CPU; use --preset demo" in caplog.text


@pytest.mark.parametrize("command", ["train", "evaluate", "check", "generate", "export", "metrics", "dense-pairs", "bench", "make-test-weights"])
def test_every_option_is_explained_and_every_command_has_examples(command, capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    undocumented = [a.dest for a in sub._actions if not a.help and a.dest != "help"]
    assert undocumented == []
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "examples:\n  python -m huvi " + command in out


def test_export_zip_holds_the_files_the_card_and_the_config(trained_run, tmp_path, capsys):
    out = tmp_path / "out" / "demo.safetensors"
    assert main(["export", "--run", str(trained_run.root), "--out", str(out), "--zip"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["zip"] == str(tmp_path / "out" / "demo.zip")
    with zipfile.ZipFile(printed["zip"]) as archive:
        assert sorted(archive.namelist()) == ["README.md", "config.yaml", "demo.motion.safetensors", "demo.safetensors", "run.json"]
        assert archive.read("demo.safetensors") == out.read_bytes()


# real processes ------------------------------------------------------------------------------------
def test_module_check_exit_codes(category, category_copy):
    good = run_module("check", "--category", str(category), "--preset", "tiny")
    assert good.returncode == 0, good.stderr
    assert lines(good.stdout)[-1].endswith("ready to train with preset tiny.")

    meta = json.loads((category_copy / "category.json").read_text())
    meta["scores"][sorted(meta["scores"])[0]] = 0
    (category_copy / "category.json").write_text(json.dumps(meta))
    bad = run_module("check", "--category", str(category_copy), "--preset", "tiny")
    assert bad.returncode == 2
    assert "score 0 is not a whole number" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_module_train_bad_clip_is_one_error_line(category_copy, tmp_path):
    name = sorted(json.loads((category_copy / "category.json").read_text())["scores"])[0]
    (category_copy / "clips" / name).write_text("not a video")
    proc = run_module("train", "--category", str(category_copy), "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = error_lines(proc.stderr)
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {name}: could not be decoded as a video")
    assert lines(proc.stderr)[-1] == errors[0]


# make-test-weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, written",
    [
        ([], [("sd15", ["sd15-12gb", "sd15-16gb", "sd15-24gb"])]),  # the default family: one model for its three presets
        (["--family", "wan"], [("wan", ["wan21-1.3b"]), ("wan", ["wan22-5b"])]),
        (["--preset", "wan22-5b"], [("wan", ["wan22-5b"])]),
    ],
)
def test_make_test_weights_writes_each_selected_model_once(args, written, tmp_path, monkeypatch, capsys):
    from huvi.families.sd15.family import SD15
    from huvi.families.wan.family import Wan

    def record(family, root, seed=0, force=False):
        return {"family": family.name, "base": family.model.base}

    monkeypatch.setattr(SD15, "write_test_weights", record)
    monkeypatch.setattr(Wan, "write_test_weights", record)
    assert main(["make-test-weights", str(tmp_path), *args]) == 0
    printed = [json.loads(line) for line in lines(capsys.readouterr().out)]
    assert [(row["family"], row["presets"]) for row in printed] == written


@pytest.mark.parametrize("preset", ["wan-tiny", "demo"])  # built in code; shipped with huvi
def test_make_test_weights_refuses_a_cpu_preset(preset, tmp_path, capsys):
    assert main(["make-test-weights", str(tmp_path), "--preset", preset]) == EXIT_BAD_INPUT
    assert error_lines(capsys.readouterr().err) == [
        f"error: Preset {preset} is a CPU preset whose model is built in code or ships with huvi; make-test-weights writes the GPU presets' models."
    ]
