"""Typed operator settings: `SHOAL_*` environment variables, overridden by `shoal operator` flags.

Read once by the composition root (`runner.py`) and passed down; nothing reads the environment later.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shoal_operator.builders.common import DEFAULT_MODEL_SERVER_IMAGE, DEFAULT_ROUTER_IMAGE

LEASE_NAME = "shoal-operator-leader"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore")

    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path; default: in-cluster, $KUBECONFIG"
    )
    context: str | None = Field(default=None, description="kubeconfig context")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="watch these namespaces; empty: all"
    )
    prometheus_url: str = Field(default="http://prometheus:9090", description="Prometheus for the autoscaler")
    drift_period_seconds: float = Field(
        default=30.0, gt=0, description="re-reconcile every object this often"
    )
    metrics_port: int = Field(default=9102, ge=0, le=65535, description="/metrics port; 0 disables")
    metrics_host: str = "0.0.0.0"
    health_port: int = Field(
        default=0, ge=0, le=65535, description="kopf liveness port (/healthz); 0 disables"
    )
    peering_name: str = Field(default="shoal", description="kopf peering object (one active operator)")
    peering: bool = Field(default=True, description="use kopf peering; false: standalone")
    peering_priority: int = Field(default=0, description="kopf peering priority of this replica")
    log_level: str = "INFO"
    json_logs: bool = True
    model_server_image: str = DEFAULT_MODEL_SERVER_IMAGE
    router_image: str = DEFAULT_ROUTER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    autoscaler_enabled: bool = Field(default=True, description="run the autoscaler loop (leader only)")
    autoscaler_period_seconds: float = Field(default=3.0, gt=0)
    autoscaler_wake_poll_seconds: float = Field(
        default=0.5,
        ge=0,
        description="how often the routers of services at zero are asked for held requests (0: off)",
    )
    lease_namespace: str | None = Field(
        default=None, description="namespace of the leader Lease; default: the pod's namespace or 'default'"
    )
    lease_name: str = Field(
        default=LEASE_NAME,
        description="leader Lease (drift repair, autoscaler); default: per watched scope (see leader_lease)",
    )
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    max_connections: int = Field(default=32, ge=1, description="connections to the API server for writes")
    worker_limit: int = Field(default=48, ge=1, description="kopf: objects processed at once (bounds memory)")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def leader_lease(self) -> str:
        """The leader Lease's name. Unless set, one per watched scope: operators that watch different
        namespaces each repair drift and autoscale their own (one shared Lease would idle all but one)."""
        if "lease_name" in self.model_fields_set or self.clusterwide:
            return self.lease_name
        scope = hashlib.sha256(",".join(sorted(self.namespaces)).encode()).hexdigest()[:10]
        return f"{self.lease_name}-{scope}"
