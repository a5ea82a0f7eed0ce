"""A private certificate authority for the local broker: a CA and a server certificate,
as PEM files Kafka reads directly (``ssl.keystore.type=PEM``, ``ssl.truststore.type=PEM``).

Uses the ``cryptography`` package (``pip install cryptography``); nothing here runs in a
worker or the SDK, only ``inferwatch dev up --secure`` and tests. Private keys are
written with mode 0600; certificates are public and readable.

>>> import tempfile, pathlib
>>> pki = write_pki(pathlib.Path(tempfile.mkdtemp()), hosts=("127.0.0.1", "localhost"))
>>> sorted(p.name for p in pki.directory.iterdir())
['broker.pem', 'ca.key', 'ca.pem']
>>> oct(pki.keystore.stat().st_mode & 0o777), oct(pki.ca_key.stat().st_mode & 0o777)
('0o600', '0o600')
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.dev.secure import write_private

__all__ = ["Pki", "write_ca", "write_pki"]

_DAYS = 825  # the longest validity clients accept for a server certificate


@dataclass(frozen=True)
class Pki:
    """Where the PEM files are. ``cafile`` is what clients trust (``kafka.ssl_cafile``);
    ``keystore`` holds the broker's private key and certificate chain."""

    directory: Path
    cafile: Path
    ca_key: Path
    keystore: Path


def _crypto():  # -> the cryptography modules, or a one-line error saying what to install
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("generating the broker's certificates needs the 'cryptography' "
                           "package: pip install cryptography") from exc
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def write_ca(directory: Path, name: str = "InferWatch dev CA") -> Pki:
    """A new self-signed CA in ``directory`` (``ca.pem``, ``ca.key``); no server certificate
    yet (``keystore`` is where :func:`write_pki` puts it). Tests use a second CA to play an
    untrusted broker."""
    x509, hashes, serialization, ec, _, NameOID = _crypto()
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    pki = Pki(directory, directory / "ca.pem", directory / "ca.key", directory / "broker.pem")
    write_private(pki.ca_key, key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    pki.cafile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def write_pki(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"),
              name: str = "InferWatch dev CA") -> Pki:
    """A CA and a broker certificate for ``hosts`` (IP addresses or DNS names) signed by it.

    ``broker.pem`` is Kafka's PEM keystore: the unencrypted PKCS#8 key, then the broker's
    certificate and the CA's (the chain clients verify against ``ca.pem``)."""
    x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID = _crypto()
    pki = write_ca(directory, name)
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.cafile.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka-broker")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    write_private(pki.keystore, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption())
                  + cert.public_bytes(serialization.Encoding.PEM)
                  + ca_cert.public_bytes(serialization.Encoding.PEM))
    return pki
