"""CurveZMQ for anprd's sockets: key files, the server side and the client side.

Plates are personal data, so the event stream can be encrypted and limited to known clients with
CurveZMQ (Curve25519 keys; see docs/security.md):

- `keygen` writes a key pair as ZeroMQ certificate files: ``NAME.key`` (public key, may be
  shared) and ``NAME.key_secret`` (both keys, mode 0600, stays on its host);
- a server socket (the daemon's PUB and catch-up sockets, the proxy's two sides) holds its secret
  key and lets in only clients whose public key is listed (`CurveServerKeys`, `CurveServer`),
  checked by pyzmq's ZAP authenticator (one per ZeroMQ context, shared by its server sockets);
- a client socket (a subscriber, a daemon connecting to a proxy) holds its own key pair and the
  server's public key (`CurveClientKeys`).

Every problem with a key file raises `CurveError`, one line naming the file.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from anprd.errors import AnprdError

__all__ = [
    "CurveClientKeys",
    "CurveError",
    "CurveServer",
    "CurveServerKeys",
    "keygen",
    "load_allowed_keys",
    "load_public_key",
    "load_secret_key",
]

logger = logging.getLogger(__name__)

_KEY_LENGTH = 40  # Z85 text of a 32-byte Curve25519 key
_REFUSAL_LOG_INTERVAL_S = 10.0  # a client retrying with a wrong key must not flood the log


class CurveError(AnprdError):
    """A key file that cannot be used; the message names the file.

    Attributes
    ----------
    path
        The file or folder.
    reason
        What is wrong with it (the message without the path), for messages that name the path
        otherwise (a config key's ``(got ...)``).
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# --- key files ------------------------------------------------------------------------------


def keygen(directory: Path | str, name: str = "anprd") -> tuple[Path, Path]:
    """Write a new key pair into `directory`: ``NAME.key`` (0644) and ``NAME.key_secret`` (0600).

    Returns
    -------
    tuple[Path, Path]
        The public and the secret key file.

    Raises
    ------
    CurveError
        If either file exists (a key is never overwritten: clients may trust it) or the folder
        cannot be written.
    """
    if not name or "/" in name or name.startswith("."):
        raise CurveError(name, "a key name is a plain file name (no '/', not starting with '.')")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise CurveError(path, "exists; a key is never overwritten (remove it first, or pick "
                                   "another --name)")
    # The secret file is created unreadable to others from the start, not chmod'ed afterwards:
    # umask is process-wide, but keygen runs alone in its CLI process.
    old_umask = os.umask(0o077)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(folder, name)
    except OSError as exc:
        raise CurveError(folder, f"cannot write keys: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    os.chmod(public, 0o644)  # a public key is meant to be copied to the other side
    os.chmod(secret, 0o600)
    return public, secret


def _load(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a ZeroMQ certificate file, checked."""
    if path.is_dir():
        raise CurveError(path, "is a folder, not a key file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise CurveError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError):
        raise CurveError(path, "is not a ZeroMQ key file (anprd keygen writes them)") from None
    for key in (public, secret):
        if key is not None and not _is_key(key):
            raise CurveError(path, "holds a malformed key (not 40 characters of Z85)")
    return public, secret


def _is_key(key: bytes) -> bool:
    if len(key) != _KEY_LENGTH:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def load_public_key(path: Path | str) -> bytes:
    """The public key (Z85) in `path`: a ``.key`` file, or a ``.key_secret`` file (holds both).

    Raises
    ------
    CurveError
        Missing, unreadable, a folder, or not a key file.
    """
    public, _ = _load(Path(path))
    return public


def load_secret_key(path: Path | str) -> tuple[bytes, bytes]:
    """The key pair (public, secret; Z85) in the secret key file `path`.

    Raises
    ------
    CurveError
        Missing, unreadable, not a key file, a public key file only, keys that do not belong
        together, or a file other users can read (a secret key others have read is no secret).
    """
    path = Path(path)
    public, secret = _load(path)
    if secret is None:
        raise CurveError(path, "holds no secret key (give the NAME.key_secret file anprd keygen "
                               "wrote)")
    if zmq.curve_public(secret) != public:
        raise CurveError(path, "its public and secret keys do not belong together")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CurveError(path, f"is readable by other users (mode {mode:04o}); make it readable "
                               f"by its owner only: chmod 600 {path}")
    return public, secret


def load_allowed_keys(paths: Iterable[Path | str]) -> frozenset[bytes]:
    """The public keys of the listed files, and of every ``*.key`` file in the listed folders.

    Raises
    ------
    CurveError
        A bad file, or a folder with no ``*.key`` file in it (most likely the wrong folder).
    """
    keys: set[bytes] = set()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob("*.key"))
            if not files:
                raise CurveError(path, "holds no public key files (*.key)")
            keys.update(load_public_key(file) for file in files)
        else:
            keys.add(load_public_key(path))
    return frozenset(keys)


# --- server and client sides ----------------------------------------------------------------


@dataclass(frozen=True)
class CurveServerKeys:
    """A CURVE server's key pair and the public keys of the clients it lets in (all Z85).

    `clients` are the files and folders `allowed` was read from; a `CurveServer` reads them again
    at each new connection, so a key added to (or removed from) a folder counts from the next
    connection on without a restart.
    """

    public: bytes
    secret: bytes
    allowed: frozenset[bytes]
    clients: tuple[Path, ...] = ()

    @classmethod
    def from_files(cls, secret_key: Path | str, clients: Sequence[Path | str]) -> CurveServerKeys:
        """Load the server's secret key file and the allowed clients' key files or folders.

        Raises
        ------
        CurveError
            A bad key file, or no client key at all (nobody could connect).
        """
        public, secret = load_secret_key(secret_key)
        if not clients:
            raise CurveError(secret_key, "no client public keys are allowed, so no client could "
                                         "connect: list their .key files or folders")
        paths = tuple(Path(path) for path in clients)
        return cls(public, secret, load_allowed_keys(paths), paths)


@dataclass(frozen=True)
class CurveClientKeys:
    """A CURVE client's key pair and the public key of the server it talks to (all Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: Path | str, client_key: Path | str) -> CurveClientKeys:
        """Load the server's public key file and this client's secret key file.

        Raises
        ------
        CurveError
            A bad key file.
        """
        server_public = load_public_key(server_key)
        public, secret = load_secret_key(client_key)
        return cls(server_public, public, secret)

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` a CURVE client of the server; call before it connects."""
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


class _AllowedKeys:
    """pyzmq credentials provider: the allowed client keys of each ZAP domain (one per server).

    Called by the authenticator thread once per connection handshake (rare), so the key files are
    read again each time: the list is what the files say now. If they cannot be read, the last
    list read is used, and that is logged.
    """

    def __init__(self) -> None:
        self.domains: dict[str, CurveServerKeys] = {}
        self._refused = 0
        self._logged_at = -float("inf")

    def _allowed(self, domain: str) -> frozenset[bytes]:
        keys = self.domains.get(domain)
        if keys is None:
            return frozenset()
        if keys.clients:
            try:
                current = load_allowed_keys(keys.clients)
            except CurveError as exc:
                logger.error("CURVE client keys: %s; using the keys read before", exc)
            else:
                if current != keys.allowed:
                    keys = self.domains[domain] = replace(keys, allowed=current)
        return keys.allowed

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self._allowed(domain)
        if not allowed:  # the key is public, so naming it in the log is safe and helps
            self._refused += 1
            now = time.monotonic()
            if now - self._logged_at >= _REFUSAL_LOG_INTERVAL_S:
                logger.warning("refused %d CURVE connection(s) from a client key that is not "
                               "allowed (last: %s)", self._refused, key.decode("ascii", "replace"))
                self._refused, self._logged_at = 0, now
        return allowed


class _Authenticator:
    """One ZAP authenticator thread per context, shared by the context's CURVE servers."""

    def __init__(self, context: zmq.Context) -> None:
        self.keys = _AllowedKeys()
        self.thread = ThreadAuthenticator(context, log=logging.getLogger("anprd.curve.zap"))
        self.thread.start()
        self.users = 0


_authenticators: dict[int, _Authenticator] = {}
_authenticators_lock = threading.Lock()


class CurveServer:
    """Makes sockets CURVE servers that let in only `keys.allowed` clients.

    Each `CurveServer` is its own ZAP domain, so two servers in one context (a proxy's two sides)
    keep separate client lists. Call `close` when its sockets are closed.

    Parameters
    ----------
    context
        The context of the sockets `apply` will be given.
    keys
        Server key pair and allowed client keys.
    """

    def __init__(self, context: zmq.Context, keys: CurveServerKeys) -> None:
        self._keys = keys
        self._context_id = id(context)
        self._domain = f"anprd-{uuid.uuid4().hex}"
        with _authenticators_lock:
            auth = _authenticators.get(self._context_id)
            if auth is None:
                auth = _authenticators[self._context_id] = _Authenticator(context)
            auth.users += 1
            auth.keys.domains[self._domain] = keys
            auth.thread.configure_curve_callback(self._domain, auth.keys)
        self._closed = False

    @property
    def public_key(self) -> bytes:
        return self._keys.public

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` a CURVE server in this domain; call before it binds."""
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public)
        socket.setsockopt(zmq.ZAP_DOMAIN, self._domain.encode("ascii"))

    def close(self) -> None:
        """Forget this domain; the context's authenticator stops with its last server."""
        with _authenticators_lock:
            if self._closed:
                return
            self._closed = True
            auth = _authenticators[self._context_id]
            auth.keys.domains.pop(self._domain, None)
            auth.thread.credentials_providers.pop(self._domain, None)
            auth.users -= 1
            if auth.users == 0:
                del _authenticators[self._context_id]
                auth.thread.stop()
