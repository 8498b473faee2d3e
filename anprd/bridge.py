"""MQTT bridge: republishes a daemon's ZeroMQ plate events to an MQTT broker (Home Assistant, Frigate).

``anprd bridge mqtt --from tcp://127.0.0.1:5555 --broker 127.0.0.1:1883 [--ha-discovery]`` runs as
its own process beside the daemon (or on the broker's host): a broker that is down, slow or
misconfigured never touches the daemon's event path, and the ZeroMQ stream stays the one contract.

Topics, with ``--topic-prefix anprd`` (the default):

- ``anprd/availability``: ``online`` / ``offline``, retained, QoS 1. ``offline`` is the MQTT last
  will, so the broker announces it when the bridge dies without a goodbye (SIGKILL, power loss).
- ``anprd/plate/<camera_id>``: each event's JSON as the daemon sent it, QoS 1, not retained (a
  retained plate would stay on the broker for anyone who subscribes later: plates are personal data).
  ``crop_jpeg`` is removed unless ``--with-crops``.
- With ``--ha-discovery``: ``homeassistant/sensor/<node_id>/<camera_id>_plate/config`` (retained),
  a Home Assistant sensor per camera whose state is the last plate read and whose attributes are the
  rest of the event. It is announced for ``--camera`` at start, for every other camera with its
  first event, again after each reconnection and whenever Home Assistant says ``online`` on
  ``homeassistant/status``.

``--tls`` / ``--tls-ca FILE`` encrypt the connection and check the broker's certificate;
``--username`` with ``--password-file`` logs in (the password never sits on the command line).
``--curve-server-key FILE --curve-client-key FILE`` (both, as for ``anprd subscribe``) make the
ZeroMQ side a CurveZMQ client of a daemon or proxy that has CURVE on (docs/security.md).

While the broker is down, events wait in a bounded buffer (``--buffer``, default 10,000; the oldest
is dropped past it, counted and logged) and are sent in order once it is back; paho resends the
messages in flight at the loss (at most ``--max-inflight``), so an event can arrive twice (QoS 1 is
at least once) but none is lost within the bound while the bridge runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from anprd.errors import AnprdError

if TYPE_CHECKING:  # imported when the bridge runs, so that `anprd --help` stays light
    import paho.mqtt.client as mqtt

    from anprd.curve import CurveClientKeys

__all__ = [
    "AVAILABILITY_OFFLINE",
    "AVAILABILITY_ONLINE",
    "BridgeError",
    "EventBuffer",
    "MqttBridge",
    "MqttBridgeSettings",
    "add_bridge_parser",
    "cmd_bridge",
    "discovery_message",
    "parse_broker",
]

logger = logging.getLogger(__name__)

AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"
_QOS = 1
_RECV_SLICE_S = 0.2  # longest wait on ZeroMQ, so a stop and the send buffer are handled promptly
_DROP_LOG_INTERVAL_S = 60.0  # a broker down for hours must not write a log line per dropped event
_GOODBYE_TIMEOUT_S = 5.0  # how long a stop waits for the buffer and the retained `offline`
_TOPIC_PART = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class BridgeError(AnprdError):
    """A bad bridge option (broker address, endpoint, topic prefix, password file); one line."""


# ---- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttBridgeSettings:
    """What ``anprd bridge mqtt`` was asked to do; see the module docstring for the topics."""

    endpoint: str
    host: str
    port: int
    topic_prefix: str = "anprd"
    client_id: str = "anprd-bridge"
    username: str | None = None
    password: str | None = None
    camera_id: str | None = None
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    node_id: str = "anprd"
    with_crops: bool = False
    buffer_size: int = 10_000
    max_inflight: int = 20
    keepalive_s: int = 30
    tls: bool = False
    tls_ca: str | None = None  # CA bundle that signed the broker's certificate; None: the system's
    # CURVE client keys for the ZeroMQ side (None: plain); kept out of repr: it holds a secret key
    curve: CurveClientKeys | None = field(default=None, repr=False)

    @property
    def availability_topic(self) -> str:
        return f"{self.topic_prefix}/availability"

    def event_topic(self, camera_id: str) -> str:
        return f"{self.topic_prefix}/plate/{camera_id}"

    def discovery_topic(self, camera_id: str) -> str:
        return f"{self.ha_prefix}/sensor/{self.node_id}/{camera_id}_plate/config"

    @property
    def ha_status_topic(self) -> str:
        return f"{self.ha_prefix}/status"


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port`` (or ``host``, port 1883; ``[v6]:port``) as (host, port); BridgeError if bad."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]\s/]+)(?::(\d+))?", text)
    if not match:
        raise BridgeError(f"--broker: {text!r} is not HOST or HOST:PORT")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else 1883
    if not 1 <= port <= 65535:
        raise BridgeError(f"--broker: port {port} is outside 1-65535")
    return host, port


def _check_topic_part(option: str, value: str) -> str:
    # MQTT wildcards (+ #) and empty levels in a publish topic are refused by brokers or, worse,
    # silently give topics no subscriber expects.
    if not _TOPIC_PART.match(value):
        raise BridgeError(f"{option}: {value!r} must be letters, digits, '_' and '-', levels "
                          "separated by '/' (no wildcards, no empty level)")
    return value


def _read_password(path: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BridgeError(f"--password-file: {path}: cannot read ({getattr(exc, 'strerror', None) or exc})"
                          ) from None
    if not lines or not lines[0]:
        raise BridgeError(f"--password-file: {path}: the first line (the password) is empty")
    return lines[0]


# ---- the bounded buffer ---------------------------------------------------------------------


class EventBuffer:
    """FIFO of MQTT messages waiting for the broker; past ``maxsize`` the oldest is dropped.

    Parameters
    ----------
    maxsize
        Most messages held; the memory bound while the broker is down (events are ~1 kB each
        without crops).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._items: deque[tuple[str, bytes]] = deque()
        self._maxsize = maxsize
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, topic: str, payload: bytes) -> bool:
        """Append; returns True when the oldest message had to be dropped to make room."""
        dropped = len(self._items) >= self._maxsize
        if dropped:
            self._items.popleft()
            self.dropped += 1
        self._items.append((topic, payload))
        return dropped

    def peek(self) -> tuple[str, bytes] | None:
        return self._items[0] if self._items else None

    def pop(self) -> tuple[str, bytes]:
        return self._items.popleft()


def discovery_message(settings: MqttBridgeSettings, camera_id: str) -> dict[str, Any]:
    """Home Assistant MQTT discovery config of ``camera_id``'s last-plate sensor."""
    return {
        "name": f"{camera_id} plate",
        "unique_id": f"{settings.node_id}_{camera_id}_plate",
        "object_id": f"{settings.node_id}_{camera_id}_plate",
        "state_topic": settings.event_topic(camera_id),
        "value_template": "{{ value_json.plate }}",
        "json_attributes_topic": settings.event_topic(camera_id),
        "availability_topic": settings.availability_topic,
        "payload_available": AVAILABILITY_ONLINE,
        "payload_not_available": AVAILABILITY_OFFLINE,
        "icon": "mdi:car",
        "qos": _QOS,
        "device": {
            "identifiers": [settings.node_id],
            "name": f"anprd {settings.node_id}",
            "manufacturer": "anprd",
            "model": "number plate recognition daemon",
        },
    }


# ---- the bridge -----------------------------------------------------------------------------


class MqttBridge:
    """ZeroMQ plate events in, MQTT messages out; :meth:`run` until :meth:`request_stop`.

    Parameters
    ----------
    settings
        Endpoint, broker and topics.
    """

    def __init__(self, settings: MqttBridgeSettings) -> None:
        import paho.mqtt.client as mqtt

        self.settings = settings
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._buffer = EventBuffer(settings.buffer_size)
        self._cameras: set[str] = {settings.camera_id} if settings.camera_id else set()
        # Discovery for these is (re)sent from the main thread: paho callbacks run on its network
        # thread, which must not block on publish while the main thread is publishing too.
        self._announce_lock = threading.Lock()
        self._announce_all = False
        # mids published and not yet acknowledged; `_acked_early` holds acks that arrived before
        # publish() returned its mid (paho may call on_publish first).
        self._ack_lock = threading.Lock()
        self._unacked: set[int] = set()
        self._acked_early: set[int] = set()
        self._last_drop_log = -float("inf")
        self._last_connect_fail_log = -float("inf")
        self.published = 0

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv311,
        )
        if settings.tls:
            try:
                client.tls_set(ca_certs=settings.tls_ca)  # verifies the broker's certificate and name
            except (ssl.SSLError, ValueError) as exc:
                raise BridgeError(f"--tls-ca: {settings.tls_ca}: not a PEM CA bundle ({exc})") from None
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
            if not settings.tls:
                logger.warning("the MQTT password travels in clear text: use --tls unless the broker "
                               "is on this host")
        client.will_set(settings.availability_topic, AVAILABILITY_OFFLINE, qos=_QOS, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.max_inflight_messages_set(settings.max_inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client

    # -- paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker %s:%d refused the connection: %s",
                           self.settings.host, self.settings.port, reason)
            return
        logger.info("connected to MQTT broker %s:%d", self.settings.host, self.settings.port)
        client.publish(self.settings.availability_topic, AVAILABILITY_ONLINE, qos=_QOS, retain=True)
        if self.settings.ha_discovery:
            client.subscribe(self.settings.ha_status_topic, qos=_QOS)
            with self._announce_lock:
                self._announce_all = True  # the broker may have lost the retained configs
        self._connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        now = time.monotonic()
        if now - self._last_connect_fail_log >= _DROP_LOG_INTERVAL_S:  # paho retries every 1-10 s
            self._last_connect_fail_log = now
            logger.warning("cannot connect to MQTT broker %s:%d%s; retrying", self.settings.host,
                           self.settings.port, " (TLS)" if self.settings.tls else "")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stop.is_set():
            logger.warning("lost the MQTT broker %s:%d (%s); buffering up to %d events",
                           self.settings.host, self.settings.port, reason, self.settings.buffer_size)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._ack_lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._acked_early.add(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        if message.topic == self.settings.ha_status_topic and message.payload == b"online":
            with self._announce_lock:
                self._announce_all = True  # Home Assistant restarted: it wants the configs again

    # -- main thread

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    def _inflight(self) -> int:
        with self._ack_lock:
            return len(self._unacked)

    def _publish(self, topic: str, payload: bytes | str, retain: bool = False) -> bool:
        """Hand one message to paho; False if it cannot take it now (not connected)."""
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, payload, qos=_QOS, retain=retain)
        # Not connected (MQTT_ERR_NO_CONN): paho keeps QoS 1 messages it was given, so this one
        # is in its hands now and goes out on reconnection; it counts as in flight.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            logger.warning("MQTT publish on %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        with self._ack_lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._unacked.add(info.mid)
        return True

    def _announce(self, camera_ids: set[str]) -> None:
        for camera_id in sorted(camera_ids):
            payload = json.dumps(discovery_message(self.settings, camera_id))
            self._publish(self.settings.discovery_topic(camera_id), payload, retain=True)

    def _accept(self, event: dict[str, Any]) -> None:
        """Queue one ZeroMQ event for the broker (and a camera's discovery on its first event)."""
        camera_id = event.get("camera_id")
        if not isinstance(camera_id, str) or not _TOPIC_PART.match(camera_id) or "/" in camera_id:
            logger.warning("skipped an event without a usable camera_id")
            return
        if not self.settings.with_crops:
            event.pop("crop_jpeg", None)  # a crop is personal data and a few kB: opt-in only
        if camera_id not in self._cameras:
            self._cameras.add(camera_id)
            if self.settings.ha_discovery:
                self._buffer.push(self.settings.discovery_topic(camera_id),
                                  json.dumps(discovery_message(self.settings, camera_id)).encode())
        payload = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if self._buffer.push(self.settings.event_topic(camera_id), payload):
            now = time.monotonic()
            if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
                self._last_drop_log = now
                logger.warning("MQTT buffer full (%d events): dropped the oldest; %d dropped in all",
                               self.settings.buffer_size, self._buffer.dropped)

    def _flush(self) -> None:
        """Send buffered messages while connected and paho has room in flight."""
        if not self._connected.is_set():
            return
        with self._announce_lock:
            announce, self._announce_all = self._announce_all, False
        if announce and self.settings.ha_discovery:
            self._announce(self._cameras)
        while self._buffer.peek() is not None and self._connected.is_set():
            if self._inflight() >= self.settings.max_inflight:
                return
            topic, payload = self._buffer.peek()  # type: ignore[misc]
            retain = topic.endswith("/config")
            if not self._publish(topic, payload, retain=retain):
                return
            self._buffer.pop()
            if not retain:
                self.published += 1

    def run(self) -> int:
        """Bridge until :meth:`request_stop`; returns the exit status (0)."""
        import zmq

        from anprd.subscriber import EventDecodeError, EventSubscriber

        settings = self.settings
        try:
            subscriber = EventSubscriber(settings.endpoint, settings.camera_id, curve=settings.curve)
        except zmq.ZMQError as exc:
            raise BridgeError(f"--from: cannot connect to {settings.endpoint}: {exc}") from None
        self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self._client.loop_start()  # paho's thread: connects, reconnects, sends, reads acks
        logger.info("bridging %s%s to MQTT %s:%d under %s/", settings.endpoint,
                    " (CURVE)" if settings.curve is not None else "", settings.host, settings.port,
                    settings.topic_prefix)
        try:
            with subscriber:
                while not self._stop.is_set():
                    try:
                        event = subscriber.recv(_RECV_SLICE_S)
                    except EventDecodeError as exc:
                        logger.warning("skipped a message: %s", exc)
                        continue
                    if event is not None:
                        self._accept(event)
                    self._flush()
        finally:
            self._goodbye()
        return 0

    def _goodbye(self) -> None:
        """Send what is buffered (for a few seconds at most), then a retained `offline`."""
        deadline = time.monotonic() + _GOODBYE_TIMEOUT_S
        while (len(self._buffer) or self._inflight()) and time.monotonic() < deadline:
            if not self._connected.is_set():
                break
            self._flush()
            time.sleep(0.02)
        if len(self._buffer):
            logger.warning("stopping with %d events not sent to the broker", len(self._buffer))
        if self._connected.is_set():
            info = self._client.publish(self.settings.availability_topic, AVAILABILITY_OFFLINE,
                                        qos=_QOS, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # connection gone: the will says it
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()


# ---- command line ---------------------------------------------------------------------------


def add_bridge_parser(subparsers: Any) -> None:
    """Add ``bridge mqtt ...`` to the CLI's subparsers (argparse only: nothing heavy is imported)."""
    bridge = subparsers.add_parser("bridge", help="republish the events elsewhere: `bridge mqtt` to an "
                                                  "MQTT broker (Home Assistant, Frigate)")
    targets = bridge.add_subparsers(dest="target", required=True, metavar="TARGET")
    p = targets.add_parser("mqtt", help="republish the events to an MQTT broker, QoS 1")
    p.add_argument("--from", dest="endpoint", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                   help="the daemon's publisher endpoint (default tcp://127.0.0.1:5555)")
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker (port 1883 if left out)")
    p.add_argument("--topic-prefix", default="anprd", help="topics: PREFIX/plate/CAMERA, PREFIX/availability")
    p.add_argument("--client-id", default="anprd-bridge", help="MQTT client id (one per bridge)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", metavar="FILE", help="file whose first line is the MQTT password")
    p.add_argument("--tls", action="store_true", help="TLS to the broker, its certificate checked "
                   "against the system's CAs")
    p.add_argument("--tls-ca", metavar="FILE", help="TLS, the broker's certificate checked against "
                   "this CA bundle (implies --tls)")
    p.add_argument("--camera", help="only this camera's events (its sensor is announced at start)")
    p.add_argument("--ha-discovery", action="store_true",
                   help="announce a Home Assistant sensor per camera (last plate)")
    p.add_argument("--ha-prefix", default="homeassistant", help="Home Assistant discovery prefix")
    p.add_argument("--node-id", default="anprd", help="device id in the discovery topics")
    p.add_argument("--with-crops", action="store_true", help="keep crop_jpeg in the messages (off: "
                   "a plate crop is personal data)")
    p.add_argument("--buffer", type=int, default=10_000, metavar="N",
                   help="events kept while the broker is down; past it the oldest is dropped")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="CURVE: the daemon's (or proxy's) public key file")
    p.add_argument("--curve-client-key", metavar="FILE",
                   help="CURVE: this bridge's secret key file (from anprd keygen; its public key "
                        "listed in the daemon's publisher.curve_clients)")
    p.set_defaults(func=cmd_bridge)


def settings_from_args(args: argparse.Namespace) -> MqttBridgeSettings:
    """Check the options; BridgeError names the first bad one."""
    from anprd.config.publisher import check_tcp_port

    try:
        check_tcp_port(args.endpoint)
    except ValueError as exc:
        raise BridgeError(f"--from: {args.endpoint}: {exc}") from None
    if "://" not in args.endpoint:
        raise BridgeError(f"--from: {args.endpoint!r} is not a ZeroMQ endpoint (tcp://HOST:PORT)")
    host, port = parse_broker(args.broker)
    if args.buffer < 1:
        raise BridgeError(f"--buffer: must be at least 1, got {args.buffer}")
    if args.camera is not None and "/" in _check_topic_part("--camera", args.camera):
        raise BridgeError(f"--camera: {args.camera!r} is not a camera id")
    if args.password_file and not args.username:
        raise BridgeError("--password-file: needs --username")
    if args.tls_ca is not None:
        try:
            Path(args.tls_ca).read_bytes()
        except OSError as exc:
            raise BridgeError(f"--tls-ca: {args.tls_ca}: cannot read ({exc.strerror or exc})") from None
    curve = _curve_keys(args.curve_server_key, args.curve_client_key)
    return MqttBridgeSettings(
        endpoint=args.endpoint,
        host=host,
        port=port,
        topic_prefix=_check_topic_part("--topic-prefix", args.topic_prefix),
        client_id=args.client_id,
        username=args.username,
        password=_read_password(args.password_file) if args.password_file else None,
        camera_id=args.camera,
        ha_discovery=args.ha_discovery,
        ha_prefix=_check_topic_part("--ha-prefix", args.ha_prefix),
        node_id=_check_topic_part("--node-id", args.node_id),
        with_crops=args.with_crops,
        buffer_size=args.buffer,
        tls=args.tls or args.tls_ca is not None,
        tls_ca=args.tls_ca,
        curve=curve,
    )


def _curve_keys(server_key: str | None, client_key: str | None) -> CurveClientKeys | None:
    """The CURVE client keys of ``--curve-server-key`` and ``--curve-client-key`` (both or
    neither); BridgeError names the option and the file."""
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        missing = "--curve-server-key" if server_key is None else "--curve-client-key"
        raise BridgeError(f"{missing}: CURVE needs both --curve-server-key (the daemon's public "
                          "key file) and --curve-client-key (this bridge's secret key file)")
    from anprd.curve import CurveClientKeys, CurveError, load_public_key, load_secret_key

    # Each file is checked on its own first, so the message names the option it was given to.
    for option, path, load in (("--curve-server-key", server_key, load_public_key),
                               ("--curve-client-key", client_key, load_secret_key)):
        try:
            load(path)
        except CurveError as exc:
            raise BridgeError(f"{option}: {exc}") from None
    return CurveClientKeys.from_files(server_key, client_key)


def cmd_bridge(args: argparse.Namespace) -> int:
    """``anprd bridge mqtt``: run until SIGTERM or SIGINT, then say `offline` and exit 0."""
    from anprd.logs import setup_logging

    settings = settings_from_args(args)  # BridgeError: one line, status 2 (anprd.cli)
    setup_logging("INFO")
    bridge = MqttBridge(settings)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        bridge.request_stop()

    previous = {signum: signal.signal(signum, on_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return bridge.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
