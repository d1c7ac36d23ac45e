"""The preset catalogue (huvi.catalogue): every preset with its model family, VRAM tier and what it gives
up, read from the presets themselves; and what this machine makes of a preset (its default, the weights)."""

from __future__ import annotations

import pytest

from huvi.catalogue import (
    catalogue,
    cpu_preset,
    family_default,
    missing_weights,
    preset_entry,
    preset_note,
    weights_on_disk,
)
from huvi.cli import main
from huvi.config import ModelConfig, load_config, preset_names


def test_every_preset_is_listed_by_family_then_tier():
    entries = catalogue()
    assert sorted(e.name for e in entries) == preset_names()
    assert [(e.family, e.name, e.tier) for e in entries] == [
        ("sd15", "demo", "CPU"), ("sd15", "tiny", "CPU"), ("sd15", "sd15-12gb", "12 GB"), ("sd15", "sd15-16gb", "16 GB"), ("sd15", "sd15-24gb", "24 GB"),
        ("wan", "wan-tiny", "CPU"), ("wan", "wan21-1.3b", "12–16 GB"), ("wan", "wan22-5b", "24 GB"),
    ]
    assert all(e.family == load_config(e.name).model.family for e in entries)


def test_what_each_preset_gives_up_is_measured_on_its_config_against_the_family_s_largest_tier():
    assert preset_entry("sd15-24gb").gives_up == () and preset_entry("sd15-24gb").summary == "the family's full setting"
    assert preset_entry("sd15-12gb").gives_up == ("12 frames (not 16)", "448×256 (not 512×320)", "motion/DPO LoRA ranks 16/8 (not 32/16)")
    assert preset_entry("sd15-16gb").label == "sd15-16gb · 16 GB · gives up motion/DPO LoRA ranks 32/8 (not 32/16)"
    assert preset_entry("wan21-1.3b").gives_up == ("Wan2.1-T2V-1.3B (not Wan2.2-TI2V-5B)", "33 frames (not 49)")
    tiny = preset_entry("wan-tiny")
    assert tiny.cpu and tiny.reference == "wan22-5b" and tiny.gives_up[0].startswith("the real model (random tiny weights: a CPU-only toy)")
    assert "9 frames (not 49)" in tiny.gives_up and "64×64 (not 832×480)" in tiny.gives_up
    assert preset_entry("no-such-preset") is None


def test_preset_notes_say_what_each_tier_is_for():
    assert preset_note("tiny").startswith("CPU preset: tiny random-weight models")
    assert preset_note("sd15-24gb").startswith("24 GB cards")
    assert preset_note("no-such-preset") == ""
    assert preset_note("wan21-1.3b").endswith("nothing has run on real Wan weights.")  # not the memory arithmetic below it


@pytest.mark.parametrize(
    ("family", "machine_default", "picked"),
    [("wan", "demo", "wan-tiny"), ("sd15", "demo", "demo"), ("sd15", "tiny", "tiny"), ("sd15", "wan-tiny", "demo"), ("wan", "sd15-24gb", "wan22-5b"), ("sd15", "sd15-12gb", "sd15-12gb")],
)
def test_a_family_picked_starts_at_the_preset_of_the_machine_s_kind(family, machine_default, picked):
    """No GPU: the family's CPU preset, as the machine's default is; a GPU: the family's full setting."""
    assert family_default(family, machine_default) == picked


def test_each_family_names_its_cpu_preset():
    assert (cpu_preset("sd15"), cpu_preset("wan")) == ("demo", "wan-tiny")


def test_weights_on_disk_finds_local_folders_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    base, adapter = tmp_path / "sd15", tmp_path / "motion"
    assert not weights_on_disk(ModelConfig(base=str(base), motion_adapter=str(adapter)))
    (base / "unet").mkdir(parents=True)
    (base / "unet" / "config.json").write_text("{}")
    adapter.mkdir()
    assert not weights_on_disk(ModelConfig(base=str(base), motion_adapter=str(adapter)))
    (adapter / "config.json").write_text("{}")
    assert weights_on_disk(ModelConfig(base=str(base), motion_adapter=str(adapter)))
    assert not weights_on_disk(ModelConfig())  # Hub ids, not in the empty cache


def test_a_wan_preset_s_weights_are_its_transformer_folder(tmp_path):
    wan = tmp_path / "wan"
    model = load_config("wan21-1.3b", [f"model.base={wan}"]).model
    assert missing_weights(model) == [str(wan)]
    (wan / "transformer").mkdir(parents=True)
    (wan / "transformer" / "config.json").write_text("{}")
    assert missing_weights(model) == []
    assert missing_weights(load_config("wan-tiny").model) == []  # built in code: nothing to fetch


def test_the_cli_lists_the_catalogue(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(preset_names())
    assert lines[0].split()[:5] == ["SD1.5", "+", "AnimateDiff", "demo", "CPU"] and lines[0].endswith("(this machine's default)")
    assert lines[1].split()[:5] == ["SD1.5", "+", "AnimateDiff", "tiny", "CPU"] and not lines[1].endswith("(this machine's default)")
    row = next(line for line in lines if " wan21-1.3b " in line)
    assert row.startswith("Wan 2.1 / 2.2 (experimental)") and row.endswith("12–16 GB  gives up Wan2.1-T2V-1.3B (not Wan2.2-TI2V-5B), 33 frames (not 49)")
    with pytest.raises(SystemExit):
        main(["presets", "--help"])
    assert "examples:\n  python -m huvi presets" in capsys.readouterr().out
