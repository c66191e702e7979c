"""The local CA: certificates that verify, files that stay private, runs that change nothing."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from karkhana import cli
from karkhana.core import config
from karkhana.core.errors import ConfigError
from karkhana.security import tls

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make(data_dir: Path, *hosts: str, force: bool = False) -> tls.InitResult:
    return tls.init(data_dir, hosts, force=force, now=NOW, hostname="mill-server")


def test_server_certificate_verifies_against_the_ca(tmp_path: Path) -> None:
    result = make(tmp_path, "mill.local,192.168.1.10")
    assert result.created_ca and result.created_server
    ca = tls.load_cert(result.ca.path)
    server = tls.load_cert(result.server.path)
    store = Store([ca])
    for name in ("localhost", "mill-server", "mill.local"):
        verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName(name))
        chain = verifier.verify(server, [])
        assert chain[-1] == ca
    for ip in ("127.0.0.1", "192.168.1.10"):
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(NOW)
            .build_server_verifier(x509.IPAddress(ipaddress.ip_address(ip)))
        )
        verifier.verify(server, [])
    unknown = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("evil"))
    with pytest.raises(x509.verification.VerificationError):
        unknown.verify(server, [])
    assert result.ca.not_after - NOW >= timedelta(days=3649)
    assert timedelta(days=700) < result.server.not_after - NOW <= timedelta(days=825)


def test_keys_are_private_and_match_their_certificates(tmp_path: Path) -> None:
    make(tmp_path)
    device = tls.issue_device(tmp_path, "loom-01", now=NOW)
    paths = tls.TlsPaths.of(tmp_path)
    for cert_path, key_path in [
        (paths.ca_cert, paths.ca_key),
        (paths.server_cert, paths.server_key),
        (device.cert.path, device.key_path),
    ]:
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert key.public_key() == tls.load_cert(cert_path).public_key()
    assert not any(p.name.startswith(".") for p in paths.root.rglob("*"))


def test_init_twice_changes_nothing_and_force_makes_a_new_ca(tmp_path: Path) -> None:
    first = make(tmp_path, "mill.local")
    files = {p: p.read_bytes() for p in tls.TlsPaths.of(tmp_path).root.glob("*")}
    again = make(tmp_path)  # fewer names asked for: the certificate already has them
    assert not again.created_ca and not again.created_server
    assert {p: p.read_bytes() for p in files} == files
    assert again.server.sha256 == first.server.sha256

    grown = make(tmp_path, "192.168.1.20")  # a new address: new server certificate, same CA
    assert not grown.created_ca and grown.created_server
    assert grown.ca.sha256 == first.ca.sha256 and "192.168.1.20" in grown.server.names

    tls.issue_device(tmp_path, "loom-01", now=NOW)
    forced = make(tmp_path, force=True)
    assert forced.created_ca and forced.ca.sha256 != first.ca.sha256
    by_name = {i.path.name: i for i in tls.show(tmp_path)}
    assert by_name["server.pem"].signed_by_ca
    assert not by_name["loom-01.pem"].signed_by_ca


def test_server_certificate_is_renewed_before_it_expires(tmp_path: Path) -> None:
    first = make(tmp_path)
    later = tls.init(tmp_path, now=NOW + timedelta(days=810), hostname="mill-server")
    assert not later.created_ca and later.created_server
    assert later.server.sha256 != first.server.sha256


def test_device_certificates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certs init"):
        tls.issue_device(tmp_path, "loom-01")
    make(tmp_path)
    made = tls.issue_device(tmp_path, "loom-01", now=NOW)
    assert made.created and made.cert.subject == "loom-01" and made.cert.signed_by_ca
    assert not tls.issue_device(tmp_path, "loom-01", now=NOW).created
    assert tls.issue_device(tmp_path, "loom-01", now=NOW, force=True).created
    with pytest.raises(ConfigError, match="not a device id"):
        tls.issue_device(tmp_path, "../etc/passwd")

    der = made.cert.path.read_bytes()
    cert = x509.load_pem_x509_certificate(der)
    assert tls.client_device_id(cert.public_bytes(serialization.Encoding.DER)) == "loom-01"
    # the server's certificate is signed by the same CA but is not for client authentication
    server = tls.load_cert(tls.TlsPaths.of(tmp_path).server_cert)
    assert tls.client_device_id(server.public_bytes(serialization.Encoding.DER)) is None
    assert tls.client_device_id(None) is None


def test_bad_host_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a host name"):
        make(tmp_path, "mill server")
    names = tls.parse_names(["Mill.Local., [::1]", "10.0.0.1"])
    assert [str(n.value) for n in names] == ["mill.local", "::1", "10.0.0.1"]


def test_tls_modes(tmp_path: Path) -> None:
    assert tls.server_tls("auto", tmp_path) is None
    assert tls.server_tls("off", tmp_path) is None
    with pytest.raises(ConfigError, match="certs init"):
        tls.server_tls("on", tmp_path)
    make(tmp_path)
    on = tls.server_tls("auto", tmp_path)
    assert on is not None and on.cafile == tls.TlsPaths.of(tmp_path).ca_cert
    assert tls.server_tls("off", tmp_path) is None
    tls.TlsPaths.of(tmp_path).server_key.unlink()
    with pytest.raises(ConfigError, match=r"server\.key is missing"):
        tls.server_tls("auto", tmp_path)
    assert tls.plain_mqtt(None, "off") and not tls.plain_mqtt(on, "off")
    assert tls.plain_mqtt(on, "on")


def test_settings_check_the_choices() -> None:
    s = config.load({"KARKHANA_TLS": "on", "KARKHANA_MQTTS_PORT": "8884"})
    assert (s.tls, s.mqtts_port, s.mqtt_plain) == ("on", 8884, "off")
    with pytest.raises(ConfigError, match="KARKHANA_TLS: tls must be auto, on or off"):
        config.load({"KARKHANA_TLS": "yes"})
    with pytest.raises(ConfigError, match="--mqtt_plain"):
        config.load({}, {"mqtt_plain": "maybe"})


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert cli.main(["certs", "device", "loom-01", *data]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run karkhana certs init first" in err

    assert cli.main(["certs", "init", "--hosts", "mill.local,10.1.2.3", *data]) == 0
    out = capsys.readouterr().out
    assert "CA      created" in out and "10.1.2.3" in out
    assert cli.main(["certs", "init", *data]) == 0
    assert "CA      kept" in capsys.readouterr().out
    assert cli.main(["certs", "device", "loom-01", *data]) == 0
    assert "loom-01.key" in capsys.readouterr().out
    assert cli.main(["certs", "show", *data]) == 0
    out = capsys.readouterr().out
    assert "CN=loom-01" in out and out.count("SHA-256") == 3 and "EXPIRED" not in out
    assert cli.main(["certs", "init", "--hosts", "bad host", *data]) == 2
    assert "bad host" in capsys.readouterr().err


def test_revocation_list_is_signed_by_the_ca_and_grows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    tls.init(tmp_path, hostname="test-host")
    paths = tls.TlsPaths.of(tmp_path)
    assert paths.crl.exists() and tls.revocations(tmp_path) == []
    first = tls.issue_device(tmp_path, "loom-01")
    serial = x509.load_pem_x509_certificate(first.cert.path.read_bytes()).serial_number
    watch = tls.RevocationWatch(paths.crl, paths.ca_cert)
    assert watch.refresh() is False and watch.serials == frozenset()

    # replacing a certificate revokes the old one
    tls.issue_device(tmp_path, "loom-01", force=True)
    assert [r.serial for r in tls.revocations(tmp_path)] == [serial]
    assert watch.refresh() is True and serial in watch.serials
    der = x509.load_pem_x509_certificate(first.cert.path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert not watch.revoked(der)  # the file now holds the new certificate
    assert cli.main(["certs", "revoke", "loom-01", *data]) == 0
    assert "revoked" in capsys.readouterr().out
    assert len(tls.revocations(tmp_path)) == 2 and not paths.device_cert("loom-01").exists()
    assert watch.refresh() is True and watch.revoked(b"not a certificate") is False
    assert cli.main(["certs", "revoke", "loom-01", *data]) == 2
    assert "has no certificate" in capsys.readouterr().err
    assert cli.main(["certs", "show", *data]) == 0
    assert "revoked 2 device certificate(s)" in capsys.readouterr().out

    # a list not signed by this CA is refused, and the watch keeps the last good one
    good = paths.crl.read_bytes()
    other = tmp_path / "other"
    tls.init(other, hostname="other-host")
    tls.issue_device(other, "x")
    tls.revoke_device(other, "x")
    paths.crl.write_bytes(tls.TlsPaths.of(other).crl.read_bytes())
    with pytest.raises(ConfigError, match="not signed by the installation's CA"):
        tls.revocations(tmp_path)
    with pytest.raises(ConfigError):
        watch.refresh()
    assert len(watch.serials) == 2
    paths.crl.write_bytes(good)
