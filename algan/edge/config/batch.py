"""``batch:`` section: cross-camera batching."""

from __future__ import annotations

from pydantic import Field

from algan.edge.config.base import Section


class BatchConfig(Section):
    """Cross-camera batching: a batch is run when it is full or when the oldest frame has waited long enough."""

    max_size: int = Field(8, ge=1, le=256, description="largest batch sent to the model (frames)")
    max_wait_ms: float = Field(
        20.0, ge=0, le=10_000, description="longest time the first frame of a batch waits for more (milliseconds)"
    )
