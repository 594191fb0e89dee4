"""Chapter parameters: declared once in the notebook's ``parameters`` cell, validated before any kernel.

A parameters cell holds one annotated assignment per parameter, with its help as a trailing comment::

    n_tokens: int = 512  # tokens of held-out text scored for perplexity

The annotation is the type (int, float, str, bool, list, dict); the value is the quick-profile
default. Values from profile YAML files and ``-p key=value`` overrides are checked against it.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


class ValueLoader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except that ``2:4`` stays the string it looks like. YAML 1.1 reads
    colon-separated digits as base 60 (``2:4`` -> 124), which turns an N:M pattern into a number;
    YAML 1.2 dropped that rule."""


# PyYAML's int and float resolvers, without their base-60 alternatives
_NUMBERS = {
    "tag:yaml.org,2002:int": re.compile(r"""^(?:[-+]?0b[0-1_]+ | [-+]?0[0-7_]+ | [-+]?(?:0|[1-9][0-9_]*)
                                           | [-+]?0x[0-9a-fA-F_]+)$""", re.X),
    "tag:yaml.org,2002:float": re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                                             | \.[0-9_]+(?:[eE][-+][0-9]+)? | [-+]?\.(?:inf|Inf|INF)
                                             | \.(?:nan|NaN|NAN))$""", re.X),
}
ValueLoader.yaml_implicit_resolvers = {
    first: [(tag, _NUMBERS.get(tag, pattern)) for tag, pattern in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_values(text: str) -> Any:
    """A YAML document of parameter values, read with :class:`ValueLoader`."""
    return yaml.load(text, Loader=ValueLoader)


class ParameterError(ValueError):
    """A parameter that does not exist, or a value of the wrong type or outside the allowed set."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    help: str


def parameters_source(notebook: Path) -> str:
    """The source of the cell tagged ``parameters`` in a MyST (.md) or .ipynb notebook."""
    import jupytext

    nb = jupytext.read(notebook)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{notebook} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def trailing_comments(source: str) -> dict[int, str]:
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    return comments


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Parameter]:
    comments = trailing_comments(source)
    params = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value):
            raise ParameterError(
                f"{where}, line {node.lineno}: every statement must be 'name: type = value  # help'")
        name, kind = node.target.id, ast.unparse(node.annotation)
        if kind not in TYPES:
            raise ParameterError(f"{where}: parameter {name!r} has type {kind!r}; allowed: {', '.join(TYPES)}")
        default = ast.literal_eval(node.value)
        params[name] = Parameter(name, kind, check_type(name, default, kind), comments.get(node.lineno, ""))
    return params


def notebook_parameters(notebook: Path) -> dict[str, Parameter]:
    return parse_parameters(parameters_source(notebook), where=str(notebook))


def check_type(name: str, value: Any, kind: str) -> Any:
    expected = TYPES[kind]
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind != "bool" and isinstance(value, bool) or not isinstance(value, expected):
        raise ParameterError(
            f"parameter {name!r} must be of type {kind}, got {value!r} ({type(value).__name__})")
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (so 3 is an int, 0.5 a float, [1, 2] a list)."""
    if "=" not in text:
        raise ParameterError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = load_values(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def resolve(declared: dict[str, Parameter], values: dict[str, Any], chapter: str) -> dict[str, Any]:
    """The full parameter set: defaults updated with ``values``, every name and type checked."""
    unknown = sorted(set(values) - set(declared))
    if unknown:
        listing = ", ".join(f"{p.name} ({p.type})" for p in declared.values())
        raise ParameterError(
            f"{chapter}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"this chapter's parameters are: {listing}")
    resolved = {name: p.default for name, p in declared.items()}
    for name, value in values.items():
        resolved[name] = check_type(name, value, declared[name].type)
    return resolved


def check_choice(name: str, value: Any, allowed) -> Any:
    """Raise a ParameterError naming the parameter and the allowed values unless value is one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ParameterError(f"parameter {name!r} = {value!r} is not allowed; choose one of {allowed}")
    return value


def check_range(name: str, value, low=None, high=None):
    """Raise unless low <= value <= high (either bound may be None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ParameterError(f"parameter {name!r} = {value!r} is out of range; allowed: [{lo}, {hi}]")
    return value


def load_profile(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = load_values(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must be a mapping of parameter names to values")
    return data
