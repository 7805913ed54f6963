"""Settings dataclasses whose fields carry their help text, so CLI flags and Dagster config are generated from one place."""

from __future__ import annotations

from dataclasses import field, fields

TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def option(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


def options_of(settings_class) -> list[tuple[str, type, object, str]]:
    """(name, type, default, help) of every field of a dataclass built with `option`."""
    return [(f.name, TYPES[f.type], f.default, f.metadata["help"]) for f in fields(settings_class)]


def from_values(settings_class, source):
    """The dataclass from any object with an attribute per field (parsed flags, a Dagster config)."""
    return settings_class(**{name: getattr(source, name) for name, *_ in options_of(settings_class)})
