"""Each setting of train, mine and index build is declared once, and refused alike from the CLI, YAML and Python."""

from __future__ import annotations

import dataclasses

import click
import pytest
from helpers import assert_one_line_error, run

from embedtune.cli import main
from embedtune.encoding import EncodeSettings
from embedtune.evaluate import EvalSettings
from embedtune.index import BuildSettings
from embedtune.mining import MiningConfig
from embedtune.settings import SettingError, meta
from embedtune.training import TrainConfig


def _command(*path: str) -> click.Command:
    command = main
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize(
    ("path", "classes"),
    [
        (("train",), (TrainConfig, MiningConfig)),
        (("mine",), (MiningConfig, EncodeSettings)),
        (("index", "build"), (BuildSettings, EncodeSettings)),
        (("eval",), (EvalSettings, EncodeSettings)),
    ],
)
def test_options_are_the_settings_themselves(path, classes):
    """Every CLI setting of the config classes is an option whose help is the field's own help."""
    options = {p.name: p for p in _command(*path).params if isinstance(p, click.Option)}
    for cls in classes:
        for field in dataclasses.fields(cls):
            m = meta(field)
            if m is None or not m.cli or (cls is MiningConfig and path == ("train",) and field.name == "seed"):
                continue  # train --mine mines with the run's own seed
            assert field.name in options, f"{path}: no option for {cls.__name__}.{field.name}"
            assert options[field.name].help.startswith(m.help), f"{path}: --{field.name} is declared twice"


def test_train_refuses_a_bad_value_alike_from_cli_yaml_and_python(tmp_path):
    message = "batch_size: must be at least 1, got 0"
    with pytest.raises(SettingError) as api:
        TrainConfig(output=tmp_path / "m", batch_size=0)
    assert str(api.value) == message
    config = tmp_path / "run.yaml"
    config.write_text(f"output: {tmp_path / 'm'}\nbatch_size: 0\n")
    with pytest.raises(SettingError) as yaml:
        TrainConfig.from_yaml(config)
    assert str(yaml.value) == f"{message} (in {config})"
    assert_one_line_error(
        run("train", "-o", tmp_path / "m", "--batch-size", 0, ok=False), rf"^Error: --batch-size \({message}\)$"
    )
    assert_one_line_error(run("train", "--config", config, ok=False), rf"^Error: {message} \(in .*run\.yaml\)$")
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob("m.*"))


def test_mine_and_index_build_refuse_bad_values_alike_from_cli_and_python(tmp_path, beir_dir, tiny_st):
    with pytest.raises(SettingError, match=r"^num_negatives: must be at least 1, got 0$"):
        MiningConfig(num_negatives=0)
    assert_one_line_error(
        run("mine", "-o", tmp_path / "x.jsonl", "--data", beir_dir, "--num-negatives", 0, ok=False),
        r"^Error: --num-negatives \(num_negatives: must be at least 1, got 0\)$",
    )
    with pytest.raises(SettingError, match=r"^target_recall: must be at most 1, got 1\.5$"):
        BuildSettings(target_recall=1.5)
    assert_one_line_error(
        run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--target-recall", 1.5, ok=False),
        r"^Error: --target-recall \(target_recall: must be at most 1, got 1\.5\)$",
    )
    with pytest.raises(SettingError, match=r"^batch_size: must be at least 1, got 0$"):
        EncodeSettings(batch_size=0)
    assert_one_line_error(
        run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--batch-size", 0, ok=False),
        r"^Error: --batch-size \(batch_size: must be at least 1, got 0\)$",
    )
    assert not (tmp_path / "x.jsonl").exists()


def test_an_option_value_a_setting_refuses_is_a_usage_error(tmp_path):
    """Exit status 2, as click and POSIX tools give a bad option value, with one line naming the flag; a value
    from a config file and data that is not there are errors of the run: exit status 1."""
    refused = run("train", "-o", tmp_path / "m", "--batch-size", 0, ok=False)
    assert refused.exit_code == 2, refused.output
    assert_one_line_error(refused, r"^Error: --batch-size \(batch_size: must be at least 1, got 0\)$")
    assert len([line for line in refused.output.splitlines() if "--batch-size" in line]) == 1, refused.output
    config = tmp_path / "run.yaml"
    config.write_text(f"output: {tmp_path / 'm'}\nbatch_size: 0\n")
    assert run("train", "--config", config, ok=False).exit_code == 1
    missing = run("train", "-o", tmp_path / "m", "--data", tmp_path / "nowhere", ok=False)
    assert missing.exit_code == 1, missing.output
    assert_one_line_error(missing, r"nowhere: no such file or folder")
    assert not (tmp_path / "m").exists()


def _leaves(group: click.Group = main, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name), command


SHARED = {  # flag: (the commands that take it, how its help begins)
    "--model": ({"eval", "mine", "search", "serve", "encode", "index build", "index add"}, "Model that "),
    "--index": ({"eval", "mine", "search", "serve"}, "Index "),
    "--split": ({"eval", "mine", "index calibrate"}, "Qrels split of --data "),
    "--overwrite": ({"eval", "mine", "encode", "split", "index build", "index merge", "index export"}, "Replace "),
}


@pytest.mark.parametrize("flag", SHARED)
def test_flags_shared_by_commands_are_declared_once(flag):
    """--model, --index, --split and --overwrite (no library settings) come from one helper each
    (embedtune/cli/options.py): one spelling and one wording wherever they appear."""
    commands, begins = SHARED[flag]
    found = {
        " ".join(path): option
        for path, command in _leaves()
        for option in command.params
        if isinstance(option, click.Option) and flag in option.opts and path != ("train",)  # train's: TrainConfig
    }
    assert set(found) == commands
    for path, option in found.items():
        assert option.help.startswith(begins), (path, option.help)
    if flag == "--model":
        assert all(o.opts == ["--model", "-m"] and "Hugging Face cache" in o.help for o in found.values())
    if flag == "--overwrite":
        assert all(o.is_flag and o.help.endswith("if already there, instead of refusing.") for o in found.values())
