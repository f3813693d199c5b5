"""Generates the sandbox's PKI: a CA, serving and client certificates, the service-account key pair, and
the front-proxy CA and client certificate of API aggregation (metrics adapters behind the API server).

EC P-256 keys for TLS (fast to generate, so a cold start stays short); RSA for the service-account
signing key because RS256 is what every Kubernetes client library expects of projected tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate: Kubernetes reads the user from CN and the groups from O."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


# Components authenticate with their well-known identities so the default RBAC bootstrap policy applies.
CLIENTS: tuple[ClientIdentity, ...] = (
    ClientIdentity("admin", "shoal-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    # kwok plays every kubelet (node and pod status, leases) for the fake nodes.
    ClientIdentity("kwok", "kwok", ("system:masters",)),
)

# The API server's client identity towards extension API servers (`--requestheader-allowed-names`).
FRONT_PROXY_CLIENT = "front-proxy-client"
FRONT_PROXY_FILES = (
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
)

APISERVER_SANS_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # tolerate clock skew
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_pair(pki: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    _write_key(pki / f"{stem}.key", key)
    (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    pki: Path,
    stem: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> None:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(aki, critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_pair(pki, stem, key, builder.sign(ca_key, hashes.SHA256()))


def _generate_base(pki: Path, service_ip: str) -> None:
    ca = _ca("shoal-sandbox-ca")
    _write_pair(pki, "ca", *ca)
    serving_sans: list[x509.GeneralName] = [x509.DNSName(d) for d in APISERVER_SANS_DNS]
    serving_sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    server = ExtendedKeyUsageOID.SERVER_AUTH
    _issue(pki, "apiserver", ca, _name("kube-apiserver"), server, serving_sans)
    for client in CLIENTS:
        subject = _name(client.user, client.groups)
        _issue(pki, client.file_stem, ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # Written last: its presence marks a complete base PKI (a crash midway regenerates everything).
    (pki / "complete").write_text("ok\n")


def ensure_front_proxy(pki: Path) -> bool:
    """The front-proxy CA and the API server's client certificate for the requests its aggregator proxies
    to extension API servers (metrics adapters): the extension server trusts the X-Remote-* headers only
    from a client this CA signed with an allowed name. A CA of its own, as kubeadm does, so that no
    ordinary client certificate of the main CA can assert those headers. Only missing files are made (an
    existing sandbox gains them on its next `up`); True when it made them."""
    if all((pki / f).is_file() for f in FRONT_PROXY_FILES):
        return False
    ca = _ca("shoal-front-proxy-ca")
    _write_pair(pki, "front-proxy-ca", *ca)
    subject = _name(FRONT_PROXY_CLIENT)
    _issue(pki, "front-proxy-client", ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return True


def generate_pki(pki: Path, service_ip: str) -> None:
    """Writes the certificates and keys that `pki` (created) lacks. A complete base PKI (CA, serving and
    client certificates, service-account keys) is kept, since running components and the real node's
    certificates trust its CA; the front-proxy files are added when missing."""
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "complete").is_file():
        _generate_base(pki, service_ip)
    ensure_front_proxy(pki)


def pki_complete(pki: Path) -> bool:
    """False also for a sandbox made before the front-proxy files existed: `generate_pki` then adds them."""
    return (pki / "complete").is_file() and all((pki / f).is_file() for f in FRONT_PROXY_FILES)
