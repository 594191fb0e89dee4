import pytest
import yaml

from repro.params import (
    ParameterError,
    check_choice,
    check_range,
    load_profile,
    load_values,
    parse_override,
    parse_parameters,
    resolve,
)

CELL = '''
profile: str = "quick"  # which profile
seed: int = 0  # random seed
lr: float = 0.1  # learning rate
use_gpu: bool = False  # run on CUDA
sizes: list = [1, 2]  # sizes to sweep
'''


def test_parameters_cell_gives_types_defaults_and_help():
    params = parse_parameters(CELL)
    assert list(params) == ["profile", "seed", "lr", "use_gpu", "sizes"]
    assert params["lr"].type == "float" and params["lr"].default == 0.1
    assert params["seed"].help == "random seed"
    assert params["sizes"].default == [1, 2]


def test_statement_that_is_not_an_annotated_assignment_is_rejected():
    with pytest.raises(ParameterError, match="name: type = value"):
        parse_parameters("x = 1\n")


def test_unsupported_annotation_is_rejected_with_allowed_types():
    with pytest.raises(ParameterError, match="allowed: int, float, str, bool, list, dict"):
        parse_parameters("x: tuple = (1,)\n")


def test_unknown_parameter_names_it_and_lists_the_chapter_parameters():
    with pytest.raises(ParameterError) as err:
        resolve(parse_parameters(CELL), {"no_such_param": 1}, "00_toolbox")
    assert "no_such_param" in str(err.value) and "seed (int)" in str(err.value)


@pytest.mark.parametrize("name,value", [("seed", "zero"), ("seed", 1.5), ("seed", True), ("use_gpu", 1),
                                        ("sizes", 3), ("profile", 3)])
def test_wrong_type_is_rejected_naming_parameter(name, value):
    with pytest.raises(ParameterError, match=f"'{name}' must be of type"):
        resolve(parse_parameters(CELL), {name: value}, "ch")


def test_int_is_accepted_for_float_and_converted():
    values = resolve(parse_parameters(CELL), {"lr": 1}, "ch")
    assert values["lr"] == 1.0 and isinstance(values["lr"], float)


def test_resolve_fills_defaults():
    values = resolve(parse_parameters(CELL), {"seed": 3}, "ch")
    assert values == {"profile": "quick", "seed": 3, "lr": 0.1, "use_gpu": False, "sizes": [1, 2]}


@pytest.mark.parametrize("text,expected", [("seed=3", ("seed", 3)), ("lr=0.5", ("lr", 0.5)),
                                           ("use_gpu=true", ("use_gpu", True)),
                                           ("sizes=[1, 2]", ("sizes", [1, 2])),
                                           ("profile=smoke", ("profile", "smoke")),
                                           ("title=a=b", ("title", "a=b")),
                                           ("patterns=[2:4, 4:8]", ("patterns", ["2:4", "4:8"])),
                                           ("pattern=2:4", ("pattern", "2:4")),
                                           ("lr=1.0e-3", ("lr", 1e-3)), ("lr=-2.5", ("lr", -2.5)),
                                           ("seed=0x10", ("seed", 16)), ("x=.inf", ("x", float("inf")))])
def test_overrides_are_read_as_yaml(text, expected):
    assert parse_override(text) == expected


def test_n_to_m_patterns_stay_strings_in_profiles_too(tmp_path):
    # YAML 1.1 reads 2:4 as the base-60 number 124; a profile must not turn a pattern into a number
    profile = tmp_path / "ch.yaml"
    profile.write_text("patterns: [2:4, 4:8, unstructured50]\nseed: 3\n")
    assert load_profile(profile) == {"patterns": ["2:4", "4:8", "unstructured50"], "seed": 3}
    assert yaml.safe_load("p: 2:4") == {"p": 124}  # what the stock loader does, and why ValueLoader exists
    assert yaml.safe_load("p: 2:4") != load_values("p: 2:4")


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ParameterError, match="key=value"):
        parse_override("seed")


def test_check_choice_and_range_name_the_allowed_values():
    assert check_choice("pattern", "2:4", ["2:4", "4:8"]) == "2:4"
    with pytest.raises(ParameterError, match=r"'pattern' = '3:2' is not allowed; choose one of \['2:4', '4:8'\]"):
        check_choice("pattern", "3:2", ["2:4", "4:8"])
    with pytest.raises(ParameterError, match=r"allowed: \[0, 1\]"):
        check_range("sparsity", 1.5, 0, 1)
