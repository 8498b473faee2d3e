"""anprd configuration: one YAML file, one pydantic model per concern.

Top-level keys: ``cameras`` (required, at least one), ``detector``, ``tracker``, ``publisher``,
``metrics``, ``logging`` and ``notify``; every section but ``cameras`` may be left out.
:func:`load_config` turns every problem into a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from anprd.config.base import AnprdBaseModel
from anprd.config.cascade import CascadeConfig
from anprd.config.detector import DetectorConfig
from anprd.config.publisher import PublisherConfig
from anprd.config.service import LoggingConfig, MetricsConfig, NotifyConfig
from anprd.config.source import (
    CameraConfig,
    FieldRuleError,
    ReplayPace,
    SourceKind,
    mask_url,
    source_kind,
)
from anprd.config.tracker import TrackerConfig
from anprd.errors import AnprdError

__all__ = [
    "AnprdConfig",
    "CameraConfig",
    "CascadeConfig",
    "ConfigError",
    "DetectorConfig",
    "FieldRuleError",
    "LoggingConfig",
    "MetricsConfig",
    "NotifyConfig",
    "PublisherConfig",
    "ReplayPace",
    "SourceKind",
    "TrackerConfig",
    "config_reference_markdown",
    "load_config",
    "mask_url",
    "source_kind",
]


class ConfigError(AnprdError):
    """A config file that cannot be used; the message is one line naming file, key and value."""


class AnprdConfig(AnprdBaseModel):
    """The whole daemon configuration (root of the YAML file)."""

    cameras: list[CameraConfig] = Field(
        min_length=1, description="Frame sources; each needs a unique `id`."
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="Plate detection and reading."
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Following plates across frames."
    )
    cascade: CascadeConfig = Field(
        default_factory=CascadeConfig,
        description="Where the detector looks in each video frame: motion gate, tracks, proposals, "
        "scheduled whole-frame pass.",
    )
    publisher: PublisherConfig = Field(
        default_factory=PublisherConfig, description="Where plate events are sent."
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics endpoint."
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="Log output."
    )
    notify: NotifyConfig = Field(
        default_factory=NotifyConfig,
        description="systemd readiness and watchdog notification.",
    )

    @model_validator(mode="after")
    def _verify(self) -> AnprdConfig:
        verify_unique_camera_ids(self)
        return self


def verify_unique_camera_ids(config: AnprdConfig) -> None:
    """Camera ids name ZeroMQ topics and metrics labels, so two cameras cannot share one."""
    first_index: dict[str, int] = {}
    for index, camera in enumerate(config.cameras):
        if camera.id in first_index:
            raise FieldRuleError(
                f"cameras.{index}.id",
                f"duplicate camera id (also cameras.{first_index[camera.id]}.id)",
                camera.id,
            )
        first_index[camera.id] = index


def load_config(path: str | Path) -> AnprdConfig:
    """Read and validate a YAML config file.

    Relative file paths in camera URLs are resolved against the file's directory.

    Raises
    ------
    ConfigError
        One line, ``<file>: <dotted.key>: <problem> (got <value>)``, for a missing or unreadable
        file, a YAML syntax error, a top level that is not a mapping, or an invalid value.
    """
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{label}: cannot read: {reason}") from None

    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: {_describe_yaml_error(exc)}") from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {_yaml_type_name(data)}"
        raise ConfigError(
            f"{label}: top level must be a mapping of sections, found {found}"
        )

    try:
        return AnprdConfig.model_validate(
            data, context={"config_dir": path.absolute().parent}
        )
    except ValidationError as exc:
        errors = exc.errors()
        line = f"{label}: {_describe_validation_error(errors[0])}"
        if len(errors) > 1:
            line += (
                f" [and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''}]"
            )
        raise ConfigError(line) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last silently, so
    a second `detector:` section would drop the first one's settings without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
    if mark is None:
        return f"{kind}: {problem}"
    return f"{kind} at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _yaml_type_name(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _describe_validation_error(error: dict[str, Any]) -> str:
    """``dotted.key: problem (got value)`` for one pydantic error."""
    loc = [str(part) for part in error["loc"]]
    message: str = error["msg"]
    value = error.get("input")
    show_value = True
    rule_error = (error.get("ctx") or {}).get("error")
    if isinstance(rule_error, FieldRuleError):
        loc += rule_error.key.split(".")
        message, value = rule_error.message, rule_error.value
    elif error["type"] == "extra_forbidden":
        message, show_value = "unknown key", False
    elif error["type"] == "missing":
        message, show_value = "required key is missing", False
    else:
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
    if not message[1:2].isupper():  # "URL has no host" keeps its capitals
        message = message[:1].lower() + message[1:]
    text = f"{'.'.join(loc)}: {message}" if loc else message
    if show_value:
        text += f" (got {_describe_value(value)})"
    return text


def _describe_value(value: Any, limit: int = 60) -> str:
    if isinstance(value, str):
        text = repr(mask_url(value))
    elif isinstance(value, Enum):
        text = repr(value.value)
    elif value is None or isinstance(value, bool | int | float | list | dict):
        text = json.dumps(value, default=str)
    else:
        text = repr(value)
    text = mask_url(" ".join(text.split()))  # one line; no password, whatever the value holds
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- configuration reference (docs/configuration.md) ---------------------------------------


def config_reference_markdown() -> str:
    """Markdown table of every config key: dotted key, type, default and description.

    List-of-section keys are written ``cameras[].url``. docs/configuration.md is generated from
    this (``python scripts/config_reference.py --write``).
    """
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    rows += _reference_rows(AnprdConfig, prefix="")
    return "\n".join(rows) + "\n"


def _reference_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        section = _section_model(annotation)
        type_text = _type_text(annotation, field.metadata)
        rows.append(
            "| "
            + " | ".join(
                _cell(text)
                for text in (
                    f"`{key}`",
                    type_text,
                    _default_text(field),
                    field.description or "",
                )
            )
            + " |"
        )
        if section is not None:
            is_list = get_origin(annotation) is list
            rows += _reference_rows(
                section, prefix=f"{key}[]." if is_list else f"{key}."
            )
    return rows


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The nested model of a section (``X``) or list of sections (``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _type_text(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _type_text(inner, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        # Field constraints apply to the value, not to null.
        text = " or ".join(
            _type_text(arg, metadata if len(options) == 1 else ()) for arg in options
        )
        return text + " or null" if len(options) < len(get_args(annotation)) else text
    constraints = _constraint_text(metadata)
    if origin is Literal:
        text = " | ".join(f"`{arg}`" for arg in get_args(annotation))
    elif origin is list:
        (item,) = get_args(annotation)
        item_text = "section" if _section_model(item) else _type_text(item)
        text = f"list of {item_text}"
    elif origin is tuple:
        text = "[" + ", ".join(_type_text(arg) for arg in get_args(annotation)) + "]"
    elif origin is dict:
        key_type, value_type = get_args(annotation)
        text = f"mapping of {_type_text(key_type)} to {_type_text(value_type)}"
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        text = " | ".join(f"`{member.value}`" for member in annotation)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "section"
    else:
        text = _SCALAR_NAMES.get(
            annotation, getattr(annotation, "__name__", str(annotation))
        )
    if constraints:
        # Compound types take their constraint in parentheses, so it reads as about the whole.
        text = f"{text} ({constraints})" if " " in text else f"{text} {constraints}"
    return text


_SCALAR_NAMES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    Path: "path",
}
_CONSTRAINT_SYMBOLS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _constraint_text(metadata: Sequence[Any]) -> str:
    parts: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            parts.append(_constraint_text(item.metadata))
            continue
        for attribute, symbol in _CONSTRAINT_SYMBOLS:
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(
                    f"{symbol} {bound:g}"
                    if isinstance(bound, float)
                    else f"{symbol} {bound}"
                )
        if getattr(item, "min_length", None) is not None:
            parts.append(f"length ≥ {item.min_length}")
        if getattr(item, "max_length", None) is not None:
            parts.append(f"length ≤ {item.max_length}")
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matching `{item.pattern}`")
    return ", ".join(part for part in parts if part)


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(default, BaseModel):
        return "(section defaults)"
    return f"`{_default_json(default)}`"


def _default_json(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    return json.dumps(value, default=str)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
