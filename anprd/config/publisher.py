"""Publisher settings: the ZeroMQ endpoint, the durable JSON-lines spool, catch-up and CURVE."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from anprd.config.base import AnprdBaseModel
from anprd.config.source import FieldRuleError
from anprd.curve import CurveError, load_allowed_keys, load_public_key, load_secret_key

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
        10_000,
        ge=1,
        le=1_000_000,
        description="Events queued per subscriber (or per proxy, in connect mode) that is not "
        "reading. When it is full, that subscriber misses events until it reads again (the others "
        "do not); each time is counted in anprd_subscriber_overflows_total and logged. Bounds the "
        "memory a frozen subscriber can take (about 1 kB per event, far more with crops).",
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
    spool_max_age_s: float | None = Field(
        None,
        gt=0,
        description="Rotated spool files whose last event is older than this many seconds are "
        "deleted, at start and at each rotation (the live file is kept). None: only "
        "spool_backups limits them.",
    )
    catchup_endpoint: str | None = Field(
        None,
        pattern=r"^(tcp|ipc|inproc)://.+$",
        description="ZeroMQ endpoint (bound) that answers 'events of stream S after sequence N' "
        "from the spool, for `anprd subscribe --since N --catchup ENDPOINT`; needs spool_path. "
        "None: off.",
    )
    catchup_max_events: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most events in one catch-up reply; a client asks again for the rest.",
    )
    curve_secret_key: Path | None = Field(
        None,
        description="CurveZMQ: this daemon's secret key file (NAME.key_secret from `anprd "
        "keygen`, mode 0600). Set, the PUB and catch-up sockets are encrypted and (bound) let in "
        "only curve_clients; see docs/security.md. None: no CURVE.",
    )
    curve_clients: list[Path] = Field(
        [],
        description="CurveZMQ: public key files (.key) of the subscribers allowed in, or folders "
        "of them; needed with curve_secret_key when a socket is bound.",
    )
    curve_server_key: Path | None = Field(
        None,
        description="CurveZMQ in connect mode: the public key file of the proxy connected to.",
    )

    @field_validator("endpoint", "catchup_endpoint")
    @classmethod
    def _check_tcp_port(cls, endpoint: str | None) -> str | None:
        return None if endpoint is None else check_tcp_port(endpoint)

    @field_validator("curve_secret_key", "curve_server_key")
    @classmethod
    def _check_key_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        resolved = _resolve(path, info)
        try:
            if info.field_name == "curve_secret_key":
                load_secret_key(resolved)
            else:
                load_public_key(resolved)
        except CurveError as exc:
            raise ValueError(_key_problem(exc, path)) from None
        return resolved

    @field_validator("curve_clients")
    @classmethod
    def _check_client_keys(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        resolved = [_resolve(path, info) for path in paths]
        for index, (given, path) in enumerate(zip(paths, resolved, strict=True)):
            try:
                load_allowed_keys([path])
            except CurveError as exc:
                raise FieldRuleError(str(index), _key_problem(exc, given), str(given)) from None
        return resolved

    @model_validator(mode="after")
    def _verify(self) -> PublisherConfig:
        verify_catchup(self)
        verify_curve(self)
        return self


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """A relative key path is relative to the config file's folder (like camera files)."""
    path = path.expanduser()
    config_dir: Any = (info.context or {}).get("config_dir")
    if not path.is_absolute() and config_dir is not None:
        path = Path(config_dir) / path
    return path


def _key_problem(exc: CurveError, given: Path) -> str:
    """What is wrong with a key file, naming the file when the config gave it relative (the
    value shown is the one given)."""
    return exc.reason if given.expanduser().is_absolute() else str(exc)


def verify_catchup(config: PublisherConfig) -> None:
    """Catch-up is served from the spool, on an endpoint of its own."""
    if config.catchup_endpoint is None:
        return
    if config.spool_path is None:
        raise FieldRuleError("catchup_endpoint", "needs spool_path: catch-up is served from the "
                             "spool", config.catchup_endpoint)
    if config.catchup_endpoint == config.endpoint and not config.endpoint.endswith(":*"):
        raise FieldRuleError("catchup_endpoint", "must differ from endpoint",
                             config.catchup_endpoint)


def verify_curve(config: PublisherConfig) -> None:
    """CURVE needs this daemon's key, the clients' keys for a bound socket, and the proxy's public
    key in connect mode; client or server keys without a secret key would be ignored."""
    if config.curve_secret_key is None:
        for key in ("curve_clients", "curve_server_key"):
            if getattr(config, key):
                raise FieldRuleError(key, "needs curve_secret_key (this daemon's key)",
                                     [str(p) for p in config.curve_clients] if key == "curve_clients"
                                     else str(config.curve_server_key))
        return
    binds = config.mode == "bind" or config.catchup_endpoint is not None
    if binds and not config.curve_clients:
        raise FieldRuleError("curve_clients", "list the public key files (or folders) of the "
                             "subscribers allowed in: with CURVE on, no one else can connect", [])
    if config.mode == "connect" and config.curve_server_key is None:
        raise FieldRuleError("curve_server_key", "in connect mode with CURVE, give the public key "
                             "file of the proxy connected to", None)
