"""Typed configuration of one EPP, read once from the command line. The core's settings (discovery,
strategy, ejection, queue bounds) are the router's own `RouterConfig`, so both front ends share them."""

from __future__ import annotations

from dataclasses import dataclass

from shoal_router.config import RouterConfig
from shoal_router.flow.classify import TenantPolicy


@dataclass(frozen=True, slots=True)
class EppConfig:
    core: RouterConfig
    grpc_port: int = 9002
    health_port: int = 9003
    metrics_port: int = 9090
    secure: bool = True  # TLS on the ext_proc port (self-signed unless cert/key are given)
    cert_file: str | None = None
    key_file: str | None = None
    fallbacks: int = 0  # extra endpoints after the primary in x-gateway-destination-endpoint
    max_body_bytes: int = 16 * 1024 * 1024
    splits_file: str | None = None  # weighted model splits (shoal_router.split), re-read on change
    tenants: tuple[tuple[str, TenantPolicy], ...] = ()  # fairness id -> priority, weight, token quota

    def validate(self) -> EppConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("--cert-file and --key-file go together")
        if not self.secure and self.cert_file:
            raise ValueError("--plaintext and --cert-file exclude each other")
        if self.fallbacks < 0:
            raise ValueError("--fallbacks must be >= 0")
        ports = {self.grpc_port, self.health_port, self.metrics_port}
        if len(ports) != 3:
            raise ValueError("--grpc-port, --health-port and --metrics-port must differ")
        return self
