"""A local WordPress site that speaks the REST API's wire format (``/wp-json/wp/v2/pages`` and
``/posts``: paging with ``X-WP-Total``/``X-WP-TotalPages``, ``_fields``, ``modified_after``,
``include``, WordPress's own error bodies) for tests of the knowledge-base sync: a double of the
network, never of Parlo's code. It also misbehaves on request like real sites do: an HTML page
instead of JSON, 404, 401/403, garbage, a redirect loop, a slow or a huge answer.

    with WordPressSimulator() as wp:
        wp.put("page", 7, "Orari", "<p>Apriamo alle 9.</p>")
        await wordpress.fetch_site(wp.site_url, ...)

``python -m bench.wp_simulator --port 9300`` runs it as a process with a few sample pages.
"""

from __future__ import annotations

from bench.wp_simulator.simulator import FAULTS, WordPressSimulator

__all__ = ["FAULTS", "WordPressSimulator"]
