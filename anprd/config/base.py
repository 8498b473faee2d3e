"""Base for every config model: unknown keys fail at load time, values are immutable."""

from pydantic import BaseModel, ConfigDict

__all__ = ["AnprdBaseModel"]


class AnprdBaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
