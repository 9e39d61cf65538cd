"""Local Anthropic, OpenAI(-compatible) and Voyage APIs for tests and benchmarks: a double of the
network, never of Parlo's code. The official SDKs are pointed at it with ``base_url``.

* :class:`AISimulator` — the server on a background thread: scripted replies, faults, latency,
  per-delta delay, the record of requests and of streams a client closed early, the pages a web
  search finds (``simulator.py``);
* ``anthropic_api.py`` / ``openai_api.py`` / ``voyage_api.py`` — one module per wire protocol;
* ``python -m bench.ai_simulator --port 9200`` — the same server as a process.
"""

from __future__ import annotations

from bench.ai_simulator.state import Fault, RecordedRequest, Reply, StreamRecord, WebPage
from bench.ai_simulator.simulator import AISimulator

__all__ = ["AISimulator", "Fault", "RecordedRequest", "Reply", "StreamRecord", "WebPage"]
