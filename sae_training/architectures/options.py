"""Each architecture's own options, read from its ``Options`` dataclass: listed for the CLI and the app,
built from a dict (``config.json``, keyword arguments) with types checked, parsed from text."""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, fields

from interp.store.errors import InputError


@dataclass(frozen=True)
class OptionSpec:
    """One option of one architecture: its name, Python type, default, help text and choices."""

    name: str
    type: type
    default: object
    help: str
    choices: tuple | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def option_specs(options_class: type) -> list[OptionSpec]:
    hints = typing.get_type_hints(options_class)
    specs = []
    for f in fields(options_class):
        kind = hints[f.name]
        kind = tuple if typing.get_origin(kind) is tuple else kind
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        specs.append(OptionSpec(f.name, kind, default, f.metadata.get("help", ""), f.metadata.get("choices")))
    return specs


def coerce(spec: OptionSpec, value, architecture: str):
    """``value`` as the option's type (a JSON list becomes a tuple of ints); a wrong type is refused."""
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            tuple: "a list of integers"}.get(spec.type, spec.type.__name__)
    wrong = InputError(f"option '{spec.name}' of '{architecture}' must be {kind}, got {value!r}")
    if spec.type is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
            raise wrong
        return tuple(value)
    if spec.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"option '{spec.name}' of '{architecture}' must be a finite number, got {value!r}")
        return float(value)
    if spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if spec.type is bool and not isinstance(value, bool) or spec.type is str and not isinstance(value, str):
        raise wrong
    if spec.choices and value not in spec.choices:
        raise InputError(f"option '{spec.name}' of '{architecture}' must be one of {list(spec.choices)}, got {value!r}")
    return value


def build_options(architecture: str, options_class: type, values: dict):
    """The options dataclass from ``values``; a key that is not one of its options is refused, naming them."""
    specs = {spec.name: spec for spec in option_specs(options_class)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        valid = ", ".join(specs) or "none"
        raise InputError(f"option {', '.join(unknown)} does not belong to architecture '{architecture}'; "
                         f"its options are: {valid}")
    return options_class(**{name: coerce(specs[name], value, architecture) for name, value in values.items()})


def parse_option(spec: OptionSpec, text: str, architecture: str):
    """An option's value from command-line / form text (tuples as comma-separated ints)."""
    try:
        if spec.type is tuple:
            value = tuple(int(part) for part in text.split(",") if part.strip())
        elif spec.type is bool:
            value = {"true": True, "false": False, "1": True, "0": False}[text.lower()]
        else:
            value = spec.type(text)
    except (ValueError, KeyError):
        raise InputError(f"{spec.flag} for '{architecture}' expects a {spec.type.__name__} "
                         f"{'(comma-separated) ' if spec.type is tuple else ''}value, got {text!r}") from None
    return coerce(spec, value, architecture)
