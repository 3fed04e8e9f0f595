"""``metrics:`` section: the optional Prometheus endpoint."""

from __future__ import annotations

from pydantic import Field

from algan.edge.config.base import Section


class MetricsConfig(Section):
    """Optional Prometheus endpoint (needs the prometheus-client package)."""

    port: int | None = Field(None, ge=1, le=65535, description="HTTP port of /metrics; omit = no endpoint")
    host: str = Field("127.0.0.1", min_length=1, description="bind address of the metrics endpoint")
