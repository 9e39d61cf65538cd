"""A local WhatsApp Cloud API (Meta Graph API) for tests and benchmarks: a double of the network.

* :class:`Simulator` — the server on a background thread, with registration, fault injection and
  the record of every send (``simulator.py``);
* :mod:`bench.simulator.payloads` — pure builders of Meta's webhook bodies;
* :func:`sign`, :func:`post_webhook` — Meta's ``X-Hub-Signature-256`` and a signed POST;
* ``python -m bench.simulator --port 9100`` — the same server as a process, driven via ``/_sim/…``.
"""

from __future__ import annotations

from bench.simulator import payloads
from bench.simulator.errors import CATALOG, ErrorSpec, GraphError
from bench.simulator.faults import Delivery, OutageMode
from bench.simulator.simulator import Simulator
from bench.simulator.state import Attempt, Phone, SendRecord, Template, WebhookDelivery
from bench.simulator.webhooks import SIGNATURE_HEADER, encode, post_webhook, post_webhook_sync, sign, signed_request

__all__ = [
    "CATALOG",
    "SIGNATURE_HEADER",
    "Attempt",
    "Delivery",
    "ErrorSpec",
    "GraphError",
    "OutageMode",
    "Phone",
    "SendRecord",
    "Simulator",
    "Template",
    "WebhookDelivery",
    "encode",
    "payloads",
    "post_webhook",
    "post_webhook_sync",
    "sign",
    "signed_request",
]
