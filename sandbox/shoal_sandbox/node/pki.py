"""The node's certificates, issued by the sandbox's existing CA (so running components keep trusting it)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal_sandbox.certs import APISERVER_SANS_DNS
from shoal_sandbox.node.config import NODE_NAME

# file stem -> (user, groups): the identities the default RBAC bootstrap policy knows.
NODE_CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "node-kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
    "node-kube-proxy": ("system:kube-proxy", ()),
    "node-coredns": ("shoal:coredns", ()),
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}
_VALIDITY = datetime.timedelta(days=3650)


def _load_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki / 'ca.key'} is not an EC key")
    return cert, key


def _issue(
    pki: Path,
    stem: str,
    subject: list[x509.NameAttribute[str]],
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_path = pki / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_node_clients(pki: Path) -> None:
    for stem, (user, groups) in NODE_CLIENTS.items():
        if (pki / f"{stem}.crt").is_file() and (pki / f"{stem}.key").is_file():
            continue
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        _issue(pki, stem, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def apiserver_has_ip(pki: Path, ip: str) -> bool:
    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ipaddress.ip_address(ip) in sans.get_values_for_type(x509.IPAddress)


def ensure_apiserver_ip(pki: Path, ips: list[str]) -> bool:
    """Reissues the API server's serving certificate when it lacks one of `ips`; True when it did."""
    if all(apiserver_has_ip(pki, ip) for ip in ips):
        return False
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in APISERVER_SANS_DNS]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]
    _issue(pki, "apiserver", subject, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    return True
