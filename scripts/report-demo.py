"""Fill a store from the real local model and write docs/report.md's page and screenshot.

    .venv/bin/python scripts/report-demo.py [STORE.db]

Two phases against llama.cpp + SmolLM2 on 127.0.0.1, every call through
`LockedChatOpenAI` and a `SeedLockCallbackHandler` on one SQLite store:
1. the reproducible setup (one slot, no prompt cache), each seeded request
   sent three times, one after the other;
2. llama-server's default setup (4 slots sharing the KV cache, prompt cache
   on), the same requests and as many new ones sent three times
   concurrently: the outputs drift while the backend identity (the build
   fingerprint) stays the same.
Then ``seedlock report --html`` writes docs/report-example.html and Chromium
(Debian's package, driven by Playwright) takes docs/img/report.png.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import sync_playwright

from langchain_seedlock import LocalServer, LockedChatOpenAI, SeedLock, SeedLockCallbackHandler
from langchain_seedlock.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a robot who learns to paint, in three sentences."
SEEDS = range(1, 5)
NEW_SEEDS = range(5, 9)  # first seen in phase 2
ROUNDS = 3
PAUSE = 65  # seconds between phases: they land in different one-minute periods
# One thread: llama.cpp's threads busy-wait, and on a shared 2-core machine two are
# ~10x slower (tests/_fixtures/llama.py).
THREADS = 1


def send(base_url: str, handler: SeedLockCallbackHandler, seed: int) -> str:
    model = LockedChatOpenAI(
        model="SmolLM2-135M-Instruct",
        base_url=base_url,
        api_key="sk-local",
        max_retries=0,
        timeout=300,
        lock=SeedLock(seed, temperature=0.7, max_tokens=32),
    )
    return str(model.invoke(PROMPT, config={"callbacks": [handler]}).content)


def main() -> None:
    store_path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "demo.db"
    url = f"sqlite:///{store_path}"
    handler = SeedLockCallbackHandler(store=url)
    with LocalServer(slots=1, cache_prompt=False, threads=THREADS) as server:
        for _ in range(ROUNDS):
            for seed in SEEDS:
                send(server.base_url, handler, seed)
    time.sleep(PAUSE)
    with LocalServer(slots=None, cache_prompt=True, threads=THREADS) as server:
        for _ in range(ROUNDS):
            both = [*SEEDS, *NEW_SEEDS]
            with ThreadPoolExecutor(max_workers=len(both)) as pool:
                list(pool.map(lambda s: send(server.base_url, handler, s), both))
    handler.close()
    page = ROOT / "docs" / "report-example.html"
    assert cli(["report", "--html", str(page), "--store", url, "--bucket", "1m"]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1100, "height": 1500})
        tab.goto(page.as_uri())
        tab.screenshot(path=str(ROOT / "docs" / "img" / "report.png"))
        browser.close()
    print(f"store {store_path}; wrote {page} and docs/img/report.png")


if __name__ == "__main__":
    main()
