"""API aggregation in the sandbox: the front-proxy PKI (also added to an existing sandbox's PKI) and the
kube-apiserver / kube-controller-manager flags that use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from shoal_sandbox import control_plane
from shoal_sandbox.certs import FRONT_PROXY_CLIENT, FRONT_PROXY_FILES, generate_pki, pki_complete


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in argv[1:] if "=" in a)


def _layout(pki: Path, hpa: float | None = None) -> control_plane.Layout:
    ports = {"etcd": 1, "kube-apiserver": 2, "kube-controller-manager": 3}
    return control_plane.Layout(pki.parent, pki, ports, "127.0.0.1", "kwok", hpa_sync_period_s=hpa)


def test_the_front_proxy_client_is_signed_by_a_ca_of_its_own(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    generate_pki(pki, "10.96.0.1")
    assert pki_complete(pki)
    fp_ca, client, main_ca = (
        _cert(pki / f) for f in ("front-proxy-ca.crt", "front-proxy-client.crt", "ca.crt")
    )
    assert fp_ca.subject != main_ca.subject
    assert client.issuer == fp_ca.subject
    fp_key = fp_ca.public_key()
    assert isinstance(fp_key, ec.EllipticCurvePublicKey)
    fp_key.verify(client.signature, client.tbs_certificate_bytes, ec.ECDSA(client.signature_hash_algorithm))
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == FRONT_PROXY_CLIENT
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_an_existing_pki_gains_the_front_proxy_files_and_keeps_its_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    generate_pki(pki, "10.96.0.1")
    for name in FRONT_PROXY_FILES:  # a sandbox made before aggregation support
        (pki / name).unlink()
    before = {f.name: f.read_bytes() for f in pki.iterdir()}
    assert not pki_complete(pki)
    generate_pki(pki, "10.96.0.1")
    assert pki_complete(pki)
    assert {f.name: f.read_bytes() for f in pki.iterdir() if f.name in before} == before
    assert all((pki / name).is_file() for name in FRONT_PROXY_FILES)


def test_the_api_server_trusts_the_front_proxy_client_for_x_remote_headers(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    flags = _flags(control_plane.kube_apiserver(_layout(pki)))
    assert flags["requestheader-client-ca-file"] == str(pki / "front-proxy-ca.crt")
    assert flags["proxy-client-cert-file"] == str(pki / "front-proxy-client.crt")
    assert flags["proxy-client-key-file"] == str(pki / "front-proxy-client.key")
    assert flags["requestheader-allowed-names"] == FRONT_PROXY_CLIENT
    assert flags["requestheader-username-headers"] == "X-Remote-User"
    assert flags["requestheader-group-headers"] == "X-Remote-Group"
    assert flags["requestheader-extra-headers-prefix"] == "X-Remote-Extra-"
    # endpoint routing would refuse the ExternalName Services that reach host-process adapters
    assert "enable-aggregator-routing" not in flags
    assert flags["client-ca-file"] != flags["requestheader-client-ca-file"]


def test_the_hpa_sync_period_is_a_controller_manager_flag_only_when_set(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    default = control_plane.kube_controller_manager(_layout(pki))
    assert not any(a.startswith("--horizontal-pod-autoscaler-sync-period") for a in default)
    tuned = _flags(control_plane.kube_controller_manager(_layout(pki, 3.0)))
    assert tuned["horizontal-pod-autoscaler-sync-period"] == "3s"
    with pytest.raises(ValueError, match="positive"):
        control_plane.kube_controller_manager(_layout(pki, 0))
