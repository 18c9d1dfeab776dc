"""The catalog as the API shows it."""

from __future__ import annotations

from app.core.pagination import Page
from app.passes.registry import CATALOG
from app.passes.schemas import TechniqueRead


def list_techniques() -> Page[TechniqueRead]:
    """Every technique with its step schema, by name."""
    items = [
        TechniqueRead(
            name=t.name,
            version=t.version,
            summary=t.summary,
            input_formats=list(t.input_formats),
            output_format=t.output_format,
            devices=list(t.devices),
            step_schema=t.config_cls.model_json_schema(),
        )
        for t in CATALOG.all()
    ]
    return Page[TechniqueRead](items=items)
