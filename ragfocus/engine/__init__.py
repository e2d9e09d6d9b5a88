"""The attention engine: one prefill, query-row attention for chosen heads, early exit."""

from ragfocus.engine.capture import (
    CAPTURE_IMPLEMENTATION,
    AttentionEngine,
    DecodeStep,
    HeadSet,
    register_capture_attention,
)

__all__ = ["CAPTURE_IMPLEMENTATION", "AttentionEngine", "DecodeStep", "HeadSet", "register_capture_attention"]
