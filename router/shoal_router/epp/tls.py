"""Server credentials for the EPP: a self-signed certificate made at start-up (what GAIE's EPPs do by
default: gateways connect with TLS but skip verification), or a mounted certificate and key."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=3650)


def self_signed(common_name: str = "shoal-epp", hosts: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM), EC P-256 (cheap to make at every start)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def server_credentials(cert_file: str | None, key_file: str | None) -> grpc.ServerCredentials:
    """From files when both are given, else self-signed."""
    if cert_file and key_file:
        with open(cert_file, "rb") as c, open(key_file, "rb") as k:
            cert_pem, key_pem = c.read(), k.read()
    else:
        cert_pem, key_pem = self_signed()
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])
