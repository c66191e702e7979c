"""A local certificate authority for TLS: server and device certificates under ``<data_dir>/tls``.

A factory has no public domain name and often no internet, so public CAs cannot help; one local
CA that devices, the edge and browsers are told to trust (copy ``ca.pem``) is simple and works
offline. Keys are EC P-256: small, quick to make, and supported by ESP32 (mbedTLS) and browsers.

Files written here (keys with mode 0600):

    tls/ca.pem, tls/ca.key            the CA, valid 10 years
    tls/server.pem, tls/server.key    HTTPS and MQTTS, valid 825 days
    tls/devices/<id>.pem, <id>.key    client certificates, common name = device id
    tls/crl.pem                       revoked device certificates, signed by the CA

A device certificate is revoked by ``karkhana certs revoke ID`` and, for the one it replaces, by
``karkhana certs device ID --force``. The serial number goes into the CA's revocation list
(``crl.pem``); the server's broker refuses revoked certificates at login and, watching the file,
closes connections that are open with one within seconds, even when another process revoked it.

Certificate and key errors from the ``cryptography`` package are translated into ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from karkhana.core.errors import ConfigError
from karkhana.core.files import write_atomically
from karkhana.core.model import is_valid_device_id

CA_DAYS = 3650
SERVER_DAYS = 825
"""Apple platforms refuse TLS server certificates valid for longer, even from a private CA."""
DEVICE_DAYS = 825
RENEW_BEFORE_DAYS = 30
"""``certs init`` issues a new server certificate when the old one expires sooner than this."""
TLS_MODES = ("auto", "on", "off")
CRL_DAYS = 3650
"""A local CA's list is rewritten at every revocation; it need not expire sooner than the CA."""

_DNS_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$"
)

Name = x509.DNSName | x509.IPAddress


@dataclass(frozen=True, slots=True)
class TlsPaths:
    """Where the CA, server and device files of one installation live."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> TlsPaths:
        return cls(data_dir / "tls")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    def device_cert(self, device_id: str) -> Path:
        return self.devices / f"{device_id}.pem"

    def device_key(self, device_id: str) -> Path:
        return self.devices / f"{device_id}.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a certificate file says, for ``karkhana certs show`` and for tests."""

    path: Path
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256: str
    names: tuple[str, ...]
    signed_by_ca: bool
    """Whether the installation's current CA signed it (False after ``certs init --force``)."""


@dataclass(frozen=True, slots=True)
class InitResult:
    ca: CertInfo
    server: CertInfo
    created_ca: bool
    created_server: bool


@dataclass(frozen=True, slots=True)
class DeviceCert:
    device_id: str
    cert: CertInfo
    key_path: Path
    created: bool


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked certificate: its serial number and when it was revoked."""

    serial: int
    revoked_at: datetime


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The files the HTTPS and MQTTS listeners use; ``cafile`` verifies device certificates,
    ``crlfile`` lists the revoked ones."""

    certfile: Path
    keyfile: Path
    cafile: Path | None
    crlfile: Path | None = None


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now.astimezone(UTC)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _san(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` issued and signed ``cert`` (signature, issuer name and key type)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _info(path: Path, cert: x509.Certificate, ca: x509.Certificate | None) -> CertInfo:
    return CertInfo(
        path=path,
        subject=_common_name(cert.subject),
        issuer=_common_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=_fingerprint(cert),
        names=_san(cert),
        signed_by_ca=ca is not None and signed_by(cert, ca),
    )


def load_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: only EC keys made by karkhana certs init are supported")
    return key


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    try:
        write_atomically(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {cert_path.parent}: {exc.strerror}") from None


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # an hour of slack for devices whose clocks run a little behind
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(now: datetime, hostname: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "karkhana"),
            # a random part: two installs on hosts of the same name get CAs of different names
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"karkhana local CA {hostname[:32]} {os.urandom(3).hex()}"
            ),
        ]
    )
    cert = (
        _builder(name, name, key, now, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signature=False, cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[Name],
    usage: x509.ObjectIdentifier,
    now: datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, ca_cert.subject, key, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signature=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def parse_names(hosts: Iterable[str]) -> list[Name]:
    """Host names and IP addresses (``"mill-server,192.168.1.10"`` split on commas)."""
    out: list[Name] = []
    for raw in hosts:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(item.strip("[]"))))
                continue
            except ValueError:
                pass
            if len(item) > 253 or not _DNS_NAME.match(item):
                raise ConfigError(f"--hosts: {item!r} is neither a host name nor an IP address")
            out.append(x509.DNSName(item.rstrip(".").lower()))
    return out


def default_names(hostname: str | None = None) -> list[Name]:
    """localhost, 127.0.0.1, ::1 and this machine's host name (short and fully qualified)."""
    names: list[Name] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    candidates = [hostname] if hostname else [socket.gethostname(), socket.getfqdn()]
    for host in candidates:
        with contextlib.suppress(ConfigError):
            names.extend(parse_names([host]))
    return names


def _unique(names: Iterable[Name]) -> list[Name]:
    seen: set[str] = set()
    out: list[Name] = []
    for n in names:
        key = str(n.value)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _server_is_current(
    paths: TlsPaths, ca: x509.Certificate, names: Sequence[Name], now: datetime
) -> bool:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return False
    try:
        cert = load_cert(paths.server_cert)
    except ConfigError:
        return False
    return (
        signed_by(cert, ca)
        and cert.not_valid_after_utc - now > timedelta(days=RENEW_BEFORE_DAYS)
        and {str(n.value) for n in names} <= set(_san(cert))
    )


def init(
    data_dir: Path,
    hosts: Sequence[str] = (),
    *,
    force: bool = False,
    now: datetime | None = None,
    hostname: str | None = None,
) -> InitResult:
    """Create the CA (unless one exists, or ``force``) and a server certificate signed by it.

    The server certificate is issued again only when it is missing, not signed by the CA, about
    to expire, or lacks one of the wanted names, so running this twice changes nothing and adding
    a host name later keeps every device's trust in the CA.
    """
    t = _now(now)
    paths = TlsPaths.of(data_dir)
    host = hostname or socket.gethostname()
    names = _unique([*default_names(hostname), *parse_names(hosts)])
    created_ca = force or not paths.ca_cert.exists()
    ca_key: ec.EllipticCurvePrivateKey | None = None
    if created_ca:
        ca_cert, ca_key = make_ca(t, host)
        _write_pair(paths.ca_cert, paths.ca_key, ca_cert, ca_key)
        # a new CA starts with an empty list: the old CA's certificates fail anyway
        _write_crl(paths, ca_cert, ca_key, [], t)
    else:
        ca_cert = load_cert(paths.ca_cert)
        if not paths.crl.exists():
            _write_crl(paths, ca_cert, _load_key(paths.ca_key), [], t)
    created_server = created_ca or not _server_is_current(paths, ca_cert, names, t)
    if created_server:
        cert, key = _issue(
            ca_cert,
            ca_key or _load_key(paths.ca_key),
            host[:64],
            names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            t,
            SERVER_DAYS,
        )
        _write_pair(paths.server_cert, paths.server_key, cert, key)
    server = load_cert(paths.server_cert)
    return InitResult(
        _info(paths.ca_cert, ca_cert, ca_cert),
        _info(paths.server_cert, server, ca_cert),
        created_ca,
        created_server,
    )


def issue_device(
    data_dir: Path,
    device_id: str,
    *,
    force: bool = False,
    days: int = DEVICE_DAYS,
    now: datetime | None = None,
) -> DeviceCert:
    """A client certificate (common name = ``device_id``) signed by the CA; kept if one exists."""
    if not is_valid_device_id(device_id):
        raise ConfigError(
            f"{device_id!r} is not a device id: 1-64 letters, digits, '_', '.' or '-'"
        )
    if days <= 0:
        raise ConfigError("--days must be positive")
    paths = TlsPaths.of(data_dir)
    if not paths.ca_cert.exists():
        raise ConfigError(f"no CA in {paths.root}: run karkhana certs init first")
    ca_cert = load_cert(paths.ca_cert)
    cert_path, key_path = paths.device_cert(device_id), paths.device_key(device_id)
    if cert_path.exists():
        existing = load_cert(cert_path)
        if signed_by(existing, ca_cert):
            if not force and key_path.exists():
                return DeviceCert(device_id, _info(cert_path, existing, ca_cert), key_path, False)
            # replaced: the old certificate must stop working, not only be forgotten
            _add_revocations(paths, ca_cert, [existing.serial_number], _now(now))
    cert, key = _issue(
        ca_cert,
        _load_key(paths.ca_key),
        device_id,
        [],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        _now(now),
        days,
    )
    _write_pair(cert_path, key_path, cert, key)
    return DeviceCert(device_id, _info(cert_path, cert, ca_cert), key_path, True)


def revoke_device(data_dir: Path, device_id: str, *, now: datetime | None = None) -> CertInfo:
    """Revoke the device's certificate: its serial goes into ``crl.pem`` and its files are
    removed. Returns what the certificate was."""
    paths = TlsPaths.of(data_dir)
    if not paths.ca_cert.exists():
        raise ConfigError(f"no CA in {paths.root}: run karkhana certs init first")
    if not is_valid_device_id(device_id):
        raise ConfigError(f"{device_id!r} is not a device id")
    cert_path = paths.device_cert(device_id)
    if not cert_path.exists():
        raise ConfigError(f"device {device_id} has no certificate in {paths.devices}")
    ca_cert = load_cert(paths.ca_cert)
    cert = load_cert(cert_path)
    info = _info(cert_path, cert, ca_cert)
    if info.signed_by_ca:
        _add_revocations(paths, ca_cert, [cert.serial_number], _now(now))
    for path in (cert_path, paths.device_key(device_id)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return info


def revocations(data_dir: Path) -> list[Revocation]:
    """The revoked certificates of the installation's CA (empty without a list)."""
    paths = TlsPaths.of(data_dir)
    if not paths.crl.exists():
        return []
    crl = _load_crl(paths.crl, load_cert(paths.ca_cert))
    return [Revocation(r.serial_number, r.revocation_date_utc) for r in crl]


def _load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate revocation list") from None
    public_key = ca.public_key()
    if crl.issuer != ca.subject or not (
        isinstance(public_key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public_key)
    ):
        raise ConfigError(f"{path} is not signed by the installation's CA")
    return crl


def _add_revocations(
    paths: TlsPaths, ca_cert: x509.Certificate, serials: Iterable[int], now: datetime
) -> None:
    entries = [
        (r.serial_number, r.revocation_date_utc)
        for r in (_load_crl(paths.crl, ca_cert) if paths.crl.exists() else [])
    ]
    known = {serial for serial, _ in entries}
    entries += [(serial, now) for serial in serials if serial not in known]
    _write_crl(paths, ca_cert, _load_key(paths.ca_key), entries, now)


def _write_crl(
    paths: TlsPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    entries: Sequence[tuple[int, datetime]],
    now: datetime,
) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=CRL_DAYS))
    )
    for serial, when in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    try:
        write_atomically(paths.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {paths.crl}: {exc.strerror}") from None


class RevocationWatch:
    """The revoked serial numbers, reloaded when ``crl.pem`` changes (any process may revoke).

    A list that cannot be read or is not signed by the CA keeps the last good one and is logged
    by the caller through the ``ConfigError`` that ``refresh`` raises.
    """

    def __init__(self, crlfile: Path | None, cafile: Path | None) -> None:
        self.crlfile = crlfile
        self.cafile = cafile
        self.serials: frozenset[int] = frozenset()
        self._stamp: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Reload the list if its file changed; True when the set of serials changed."""
        if self.crlfile is None or self.cafile is None:
            return False
        try:
            st = self.crlfile.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        serials: frozenset[int] = frozenset()
        if stamp is not None:
            crl = _load_crl(self.crlfile, load_cert(self.cafile))
            serials = frozenset(r.serial_number for r in crl)
        changed = serials != self.serials
        self.serials = serials
        return changed

    def revoked(self, der: bytes | None) -> bool:
        if not der or not self.serials:
            return False
        try:
            serial = x509.load_der_x509_certificate(der).serial_number
        except ValueError:
            return False
        return serial in self.serials


def show(data_dir: Path) -> list[CertInfo]:
    """The CA, the server certificate and every device certificate that exist, in that order."""
    paths = TlsPaths.of(data_dir)
    if not paths.ca_cert.exists():
        raise ConfigError(f"no CA in {paths.root}: run karkhana certs init first")
    ca = load_cert(paths.ca_cert)
    files = [paths.ca_cert, paths.server_cert, *sorted(paths.devices.glob("*.pem"))]
    return [_info(p, load_cert(p), ca) for p in files if p.exists()]


def client_device_id(der: bytes | None) -> str | None:
    """The device id (common name) of a client certificate the TLS layer has already verified.

    Only certificates made for client authentication count, so the server's own certificate,
    signed by the same CA, cannot log in as a device.
    """
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        return None
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(attrs[0].value) if attrs else ""
    return cn if is_valid_device_id(cn) else None


def server_tls(mode: str, data_dir: Path) -> ServerTls | None:
    """The TLS files to serve with, or None for plain HTTP and MQTT.

    ``auto`` turns TLS on when ``certs init`` has made ``server.pem``; ``on`` insists on it.
    """
    if mode not in TLS_MODES:
        raise ConfigError(f"tls must be auto, on or off, got {mode!r}")
    if mode == "off":
        return None
    paths = TlsPaths.of(data_dir)
    cert, key = paths.server_cert.exists(), paths.server_key.exists()
    if not cert and not key:
        if mode == "on":
            raise ConfigError(
                f"tls is on but {paths.server_cert} does not exist: run karkhana certs init"
            )
        return None
    if not (cert and key):
        missing = paths.server_key if cert else paths.server_cert
        raise ConfigError(f"{missing} is missing: run karkhana certs init")
    ca = paths.ca_cert if paths.ca_cert.exists() else None
    return ServerTls(
        paths.server_cert,
        paths.server_key,
        ca,
        paths.crl if ca is not None else None,
    )


def plain_mqtt(tls: ServerTls | None, mqtt_plain: str) -> bool:
    """Plain MQTT runs when TLS is off, and beside MQTTS only when ``mqtt_plain`` is ``on``."""
    if mqtt_plain not in ("on", "off"):
        raise ConfigError(f"mqtt_plain must be on or off, got {mqtt_plain!r}")
    return tls is None or mqtt_plain == "on"
