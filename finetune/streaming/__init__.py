"""Live streaming inference: many sessions on one model, cached frames and token columns, exact against offline.

>>> from finetune.streaming import StreamingEngine
>>> engine = StreamingEngine(model, window_s=10.0, hop_s=0.5)
>>> session = engine.open_session(sample_rate=44100)
>>> hops = session.push(chunk)

See :mod:`finetune.streaming.engine` (exactness, policies), :mod:`finetune.streaming.session` (input, clock, gaps,
faults) and :mod:`finetune.streaming.types` (the hop results and the post-processor interface).
"""

from .encoders import ENCODER_CACHES, register_encoder_cache
from .engine import START_POLICIES, StreamingEngine
from .plan import WindowPlan, plan_window
from .session import StreamEnd, StreamError, StreamingSession
from .types import HopResult, PostProcessor, RawHop, SegmentEvent, WindowSpec

__all__ = [
    "StreamingEngine",
    "StreamingSession",
    "StreamError",
    "StreamEnd",
    "START_POLICIES",
    "WindowSpec",
    "RawHop",
    "HopResult",
    "SegmentEvent",
    "PostProcessor",
    "WindowPlan",
    "plan_window",
    "ENCODER_CACHES",
    "register_encoder_cache",
]
