"""One CLI grammar (issue 24, finding 9): --version on every command, --config for config files, one meaning per flag
(--batch-size / --batch-profile, --input-size H W or N, -q), old spellings working with a deprecation line, overlay
files named after their image."""

from __future__ import annotations

import importlib

import pytest

import algan

COMMANDS = {"algan-train": "train", "algan-eval": "eval", "algan-export": "export", "algan-edge": "edge",
            "algan-alarms": "alarms", "algan-synth": "synth", "algan-demo": "demo", "algan-calibrate": "calibrate",
            "algan-bench": "bench", "algan-predict": "predict"}


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_command_has_version(prog, capsys):
    main = importlib.import_module(f"algan.cli.{COMMANDS[prog]}").main
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{prog} {algan.__version__}"), out


def test_every_console_script_is_covered():
    from pathlib import Path

    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(COMMANDS)


def test_check_config_takes_config_and_keeps_the_old_form(tmp_path, capsys):
    from algan.cli.edge import main

    bad = tmp_path / "edge.yaml"
    bad.write_text("device_id: line1\ncameras: []\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "deprecated" not in capsys.readouterr().err
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "check-config CONFIG is deprecated" in err and "check-config --config CONFIG" in err
    assert main(["check-config"]) == 2
    assert "needs --config FILE" in capsys.readouterr().err


def test_batch_flags_have_one_meaning(capsys):
    from algan.cli.edge import _parser as edge_parser
    from algan.cli.export import build_parser as export_parser
    from algan.cli.predict import build_parser as predict_parser

    a = predict_parser().parse_args(["m", "x", "--batch-size", "4"])
    assert a.batch_size == 4 and "deprecated" not in capsys.readouterr().err
    a = predict_parser().parse_args(["m", "x", "--batch", "3"])
    assert a.batch_size == 3 and "--batch is deprecated" in capsys.readouterr().err
    e = export_parser().parse_args(["m", "--batch-profile", "1:2:4"])
    old = export_parser().parse_args(["m", "--batch", "1:2:4"])
    assert e.batch == old.batch and "use --batch-profile" in capsys.readouterr().err
    b = edge_parser().parse_args(["build-engine", "m", "--batch-profile", "1:4:8"])
    assert b.batch == "1:4:8"
    # without either spelling the new flag's default holds (the deprecated one declares none)
    assert edge_parser().parse_args(["build-engine", "m"]).batch == "1:8:16"
    assert predict_parser().parse_args(["m", "x"]).batch_size == 8
    assert export_parser().parse_args(["m"]).batch == export_parser().parse_args(["m", "--batch-profile",
                                                                                 "1:8:16"]).batch


def test_input_size_takes_h_w_or_one_n():
    from algan.cli._common import input_size

    assert input_size([224]) == (224, 224) and input_size([256, 320]) == (256, 320)
    with pytest.raises(ValueError, match="--input-size takes H W"):
        input_size([1, 2, 3])


def test_quiet_has_a_short_form():
    from algan.cli.train import build_parser

    assert build_parser().parse_args(["--data", "d", "--out", "o", "-q"]).quiet


@pytest.mark.parametrize("module, argv", [("calibrate", ["m", "--data", "d"]), ("export", ["m"]),
                                          ("predict", ["m", "x"])])
def test_every_command_with_a_summary_takes_quiet(module, argv):
    parser = importlib.import_module(f"algan.cli.{module}").build_parser()
    assert parser.parse_args([*argv, "-q"]).quiet and parser.parse_args([*argv, "--quiet"]).quiet
    assert not parser.parse_args(argv).quiet


def test_overlay_files_are_named_after_their_image():
    from algan.cli.predict import overlay_name

    used: set[str] = set()
    assert overlay_name("good/f000.png", used) == "good/f000.jpg"
    assert overlay_name("good/f000.jpg", used) == "good/f000_jpg.jpg"  # a second f000: not overwritten
    assert overlay_name("clip.mp4#12", used) == "clip_12.jpg"
    assert overlay_name("x.jpg", used) == "x.jpg"
