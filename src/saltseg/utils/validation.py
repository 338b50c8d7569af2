"""The base of every config section: unknown keys refused, and no boolean where a number belongs."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _takes_number_not_bool(annotation: Any) -> bool:
    """True for ``int`` / ``float`` fields (optionally ``| None``) that do not also accept a bool."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation)) - {type(None)}
        return bool(args) and args <= {int, float}
    return False


class ConfigSection(BaseModel):
    """A config section: extra keys are errors, and ``true`` / ``yes`` / ``on`` given for a number field
    is refused (pydantic would read it as 1 and train with it)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _takes_number_not_bool(field.annotation):
            raise ValueError(f"a number, not {str(value).lower()}")
        return value
