"""Publisher settings: the ZeroMQ endpoint and the durable JSON-lines spool."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from anprd.config.base import AnprdBaseModel

__all__ = ["PublisherConfig", "check_tcp_port"]


def check_tcp_port(endpoint: str) -> str:
    """`endpoint` if it is not TCP, or its port is * or 1-65535. ZeroMQ takes a larger number modulo
    65536 and binds there (tcp://127.0.0.1:99999 binds 34463), where no subscriber looks."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    port = endpoint.rpartition(":")[2]
    if port == "*" or (port.isdigit() and 1 <= int(port) <= 65535):
        return endpoint
    raise ValueError("a tcp:// endpoint needs a port from 1 to 65535, or * for any free port")


class PublisherConfig(AnprdBaseModel):
    """Where events go: a ZeroMQ PUB socket for live consumers, and an optional spool file."""

    endpoint: str = Field(
        "tcp://127.0.0.1:5555",
        pattern=r"^(tcp|ipc|inproc)://.+$",
        description="ZeroMQ endpoint of the PUB socket (tcp://host:port, tcp://host:* for any free "
        "port, ipc:///path, inproc://name).",
    )
    mode: Literal["bind", "connect"] = Field(
        "bind",
        description="bind: subscribers connect to us; connect: we connect to a proxy's XSUB side.",
    )
    sndhwm: int = Field(
        100_000,
        ge=0,
        description="Send high-water mark in messages (0 = unlimited); PUB drops messages beyond "
        "it, so keep it high enough for bursts.",
    )
    linger_ms: int = Field(
        1000,
        ge=0,
        description="How long stop() waits to flush queued messages to connected subscribers.",
    )
    spool_path: Path | None = Field(
        None,
        description="Append-only JSON-lines file every event is written (and fsync'd) to before it "
        "is sent: the durable record. None: off.",
    )
    spool_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Size at which the spool is rotated to <spool>.1, <spool>.2, ...",
    )
    spool_backups: int = Field(
        10, ge=1, description="Rotated spool files kept; the oldest is deleted beyond this."
    )
    spool_fsync: bool = Field(
        True,
        description="fsync the spool after every event (durable across power loss, one disk flush "
        "per event).",
    )

    @field_validator("endpoint")
    @classmethod
    def _check_tcp_port(cls, endpoint: str) -> str:
        return check_tcp_port(endpoint)
