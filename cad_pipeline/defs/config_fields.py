"""Dagster config classes generated from the project's settings dataclasses, so the UI shows the CLI's options."""

import dagster as dg
import pydantic

from cad_pipeline.options import allowed_of, options_of


def config_class(name: str, settings_class, doc: str, module: str) -> type[dg.Config]:
    """Numeric ranges become pydantic bounds, so a value out of range fails the run before any step starts."""
    fields = options_of(settings_class)
    allowed = allowed_of(settings_class)
    body = {
        name: pydantic.Field(default=default, description=help_text, ge=allowed[name].minimum, le=allowed[name].maximum)
        for name, _, default, help_text in fields
    }
    annotations = {name: kind for name, kind, _, _ in fields}
    return type(name, (dg.Config,), {"__doc__": doc, "__module__": module, "__annotations__": annotations, **body})
