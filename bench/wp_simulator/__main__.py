"""``python -m bench.wp_simulator --port 9300``: a sample WordPress site as a process (Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import threading

from bench.wp_simulator.simulator import WordPressSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wp_simulator", description="WordPress REST API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--pages", type=int, default=3, help="sample pages (and as many posts) to serve")
    args = parser.parse_args(argv)
    with WordPressSimulator(host=args.host, port=args.port) as wp:
        for i in range(1, args.pages + 1):
            wp.put("page", i, f"Pagina {i}", f"<h2>Sezione {i}</h2><p>Testo della pagina {i}.</p>")
            wp.put("post", 100 + i, f"Articolo {i}", f"<p>Notizia numero {i} &amp; altro.</p>")
        print(f"WordPress site at {wp.site_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
