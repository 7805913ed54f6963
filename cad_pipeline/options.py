"""Settings dataclasses whose fields carry their help text and their allowed values, so CLI flags and Dagster config are
generated from one place and a bad value is refused the same way everywhere: one line naming the setting, the value and
what is allowed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

TYPES = {"str": str, "int": int, "float": float, "bool": bool}


class SettingError(ValueError):
    """A setting outside its allowed values; the message is the one line a user needs."""


@dataclass(frozen=True)
class Allowed:
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        """What is wrong with `value`, or None."""
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum:g}" + (f" and at most {self.maximum:g}" if self.maximum is not None else "")
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum:g}" + (f" and at least {self.minimum:g}" if self.minimum is not None else "")
        return None


def option(default, help_text: str, minimum: float | None = None, maximum: float | None = None, choices: tuple[str, ...] = ()):
    return field(default=default, metadata={"help": help_text, "allowed": Allowed(minimum, maximum, tuple(choices))})


def options_of(settings_class) -> list[tuple[str, type, object, str]]:
    """(name, type, default, help) of every field of a dataclass built with `option`."""
    return [(f.name, TYPES[f.type], f.default, f.metadata["help"]) for f in fields(settings_class)]


def allowed_of(settings_class) -> dict[str, Allowed]:
    return {f.name: f.metadata["allowed"] for f in fields(settings_class)}


def check_settings(settings) -> None:
    """SettingError for the first field outside its allowed values; called by each settings class on construction."""
    check_values(type(settings), {name: getattr(settings, name) for name in allowed_of(type(settings))})


def check_values(settings_class, values: dict) -> None:
    """SettingError for the first of `values` (some of the class's fields) outside its allowed values."""
    allowed = allowed_of(settings_class)
    for name, value in values.items():
        problem = allowed[name].problem(value)
        if problem:
            raise SettingError(f"{name} {value!r}: {problem}")


def from_values(settings_class, source):
    """The dataclass from any object with an attribute per field (parsed flags, a Dagster config)."""
    return settings_class(**{name: getattr(source, name) for name, *_ in options_of(settings_class)})
