"""Base for every config model: unknown keys fail at load time, values are immutable and finite."""

from pydantic import BaseModel, ConfigDict

__all__ = ["AnprdBaseModel"]


class AnprdBaseModel(BaseModel):
    # .inf and .nan are valid YAML floats; no setting means "infinite" (an infinite cost weight
    # silently suppressed every event), so they fail like any other bad value
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
