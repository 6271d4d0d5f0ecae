"""Settings declared once: types, choices and ranges are refused with a message naming the setting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError, from_mapping, read_yaml_mapping, setting, validate


@dataclass
class Example:
    output: Path = setting(help="where")
    batch_size: int = setting(32, help="rows per step", min=1)
    learning_rate: float = setting(5e-5, help="peak rate", above=0)
    scheduler: str = setting("linear", help="schedule", choices=("linear", "cosine"))
    dims: tuple[int, ...] | None = setting(None, help="dimensions", min=1)
    score_range: tuple[float, float] | None = setting(None, help="low and high")

    def __post_init__(self) -> None:
        validate(self)


def test_good_values_are_normalised():
    ok = Example(output="out", dims=[4, 8], score_range=[0, 5], learning_rate=1)
    assert ok.output == Path("out") and ok.dims == (4, 8) and ok.score_range == (0.0, 5.0)
    assert isinstance(ok.learning_rate, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 0}, "batch_size: must be at least 1, got 0"),
        ({"batch_size": True}, "batch_size: expected a whole number, got True"),
        ({"batch_size": "two"}, "batch_size: expected a whole number, got 'two'"),
        ({"learning_rate": "1e-5"}, "learning_rate: expected a number, got '1e-5'"),
        ({"learning_rate": 0}, "learning_rate: must be greater than 0, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate: expected a finite number, got nan"),
        ({"scheduler": "nonsense"}, "scheduler: 'nonsense' is not one of linear, cosine"),
        ({"dims": [0]}, "dims: must be at least 1, got 0"),
        ({"score_range": [1]}, "score_range: expected two values, got [1]"),
        ({"output": ""}, "output: expected a path, got ''"),
        ({"output": None}, "output: a value is required"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(values, message):
    with pytest.raises(SettingError) as error:
        Example(**{"output": "out", **values})
    assert str(error.value) == message


def test_a_mapping_names_its_source_and_refuses_unknown_keys():
    with pytest.raises(SettingError, match=r"^batch_size: expected a whole number, got 'two' \(in run.yaml\)$"):
        from_mapping(Example, {"batch_size": "two"}, "run.yaml", output="o")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: unknown setting 'batch'"):
        from_mapping(Example, {"batch": 2}, "run.yaml", output="o")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: 'output' is required"):
        from_mapping(Example, {}, "run.yaml")
    assert from_mapping(Example, {"batch_size": 8}, "run.yaml", output="o", batch_size=4).batch_size == 4


def test_yaml_reads_exponent_numbers_as_numbers_and_keeps_integers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('learning_rate: 1e-5\nbatch_size: 16\nwarmup_ratio: .5\nquoted: "1e-5"\nname: e5\n')
    values = read_yaml_mapping(path)
    assert values == {"learning_rate": 1e-5, "batch_size": 16, "warmup_ratio": 0.5, "quoted": "1e-5", "name": "e5"}
    assert isinstance(values["batch_size"], int)
    path.write_text("- a list\n")
    with pytest.raises(EmbedtuneError, match="expected a mapping"):
        read_yaml_mapping(path)
