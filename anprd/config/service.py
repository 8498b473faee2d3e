"""Config for running as a service: metrics endpoint, logging, systemd notification timing."""

from __future__ import annotations

import ipaddress
from typing import Literal, get_args

from pydantic import Field, field_validator

from anprd.config.base import AnprdBaseModel

__all__ = ["LOG_LEVELS", "LogLevel", "LoggingConfig", "MetricsConfig", "NotifyConfig"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


class MetricsConfig(AnprdBaseModel):
    """Prometheus metrics plus /healthz and /ready on one HTTP port."""

    enabled: bool = Field(True, description="Serve /metrics, /healthz and /ready over HTTP.")
    address: str = Field(
        "127.0.0.1",
        min_length=1,
        description=(
            "IP address to bind. The default keeps the endpoint local; use 0.0.0.0 or :: for a "
            "remote Prometheus (the endpoint has no authentication)."
        ),
    )
    port: int = Field(
        9108,
        ge=0,
        le=65535,
        description="TCP port to bind; 0 picks a free port (tests).",
    )

    @field_validator("address")
    @classmethod
    def _address_is_ip(cls, value: str) -> str:
        # A literal IP fails early with a clear message instead of a resolver error at bind.
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address (a host name is not resolved here)") from None
        return value


class LoggingConfig(AnprdBaseModel):
    """One-line logs to stderr, picked up by journald under systemd."""

    level: LogLevel = Field("INFO", description="Lowest level logged (case-insensitive).")
    format: Literal["text", "json"] = Field("text", description="'text' for people, 'json' for log shippers.")
    log_plates: bool = Field(
        False,
        description=(
            "Write plate text in clear in log messages. Plates are personal data, so by default "
            "logs show a per-process salted hash instead (published events keep the text)."
        ),
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        # YAML authors write "info" as often as "INFO"; both mean the same stdlib level.
        return value.strip().upper() if isinstance(value, str) else value


class NotifyConfig(AnprdBaseModel):
    """Timing of the systemd watchdog, shutdown drain and status line."""

    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description=(
            "Stop sending WATCHDOG=1 when no frame was processed for this long, so systemd "
            "restarts a stalled pipeline (after the unit's WatchdogSec); not while every camera "
            "is down and being reconnected."
        ),
    )
    drain_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description=(
            "On SIGTERM, time allowed to finish queued frames and publish pending events; keep "
            "it below the unit's TimeoutStopSec."
        ),
    )
    status_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often STATUS= (fps, camera state) is sent to systemd.",
    )
