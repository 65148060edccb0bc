"""README's picture of the ``--serve`` page (docs/serve.png): headless Chromium (the system's, through Selenium) on
a live 640x360 source (the cat panning, 30 fps) explained by the default model, top-3, boxes on.

    python scripts/screenshot_serve.py [docs/serve.png]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_serve import headless_chromium, serve_live

import streamcam
from streamcam.config import ViewOptions


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png")

    def photograph(base: str) -> None:
        browser = headless_chromium(1100, 1000)
        try:
            browser.get(base)
            time.sleep(4)  # frames, records and this browser's own latency have come in
            browser.save_screenshot(str(out))
        finally:
            browser.quit()

    explainer = streamcam.Explainer(device="cpu", top_k=3).prepare()
    serve_live(explainer, 6.0, photograph, ViewOptions(draw_boxes=True))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
