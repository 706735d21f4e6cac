"""The dashboard in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser) while the real
pipeline runs on real Zeek logs: cards and chart render, values change on refresh, a killed writer turns red,
and the console stays clean. The screenshot lands in the test's tmp folder (and in docs/dashboard.png with
ZEEK_PIPELINE_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.browser import chromium
from tests.infra.zeek_data import PROJECT_ROOT
from tests.integration.test_health_kafka import wait_until
from tests.integration.test_health_pipeline import flowing, running_pipeline

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

DOWN_RED = "rgb(197, 34, 31)"  # --down in dashboard.css


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as instance:
        yield instance


def test_dashboard_shows_the_live_pipeline_and_turns_the_killed_writer_red(browser: object, kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    with running_pipeline(kafka_bootstrap, tmp_path) as pipeline:
        wait_until(lambda: flowing(pipeline), 120, "both services ok with events flowing in and out")
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(pipeline.health.url) or r.url.startswith("data:")
                else outside.append(r.url))

        page.goto(pipeline.health.url + "/")
        expect(page.locator("#verdict-state")).to_have_text("ok")
        normalizer = page.locator('.card[data-key="normalizer-enricher/n-0"]')
        writer = page.locator('.card[data-key="parquet-writer/w-0"]')
        expect(normalizer).to_have_class("card state-ok")
        expect(writer).to_have_class("card state-ok")

        # The chart draws both series once the history has a few samples (the page refreshes every second).
        # (expect() polls without eval, which the page's Content-Security-Policy forbids.)
        at_least_15 = re.compile(r"^(1[5-9]|[2-9][0-9]|[0-9]{3,})$")
        expect(page.locator("#chart .series-in")).to_have_attribute("data-points", at_least_15, timeout=60_000)
        assert int(page.locator("#chart .series-out").get_attribute("data-points") or 0) >= 5
        assert page.locator("#chart .latest").text_content().startswith("in ")  # type: ignore[union-attr]

        # Values change after a refresh, without reloading the page.
        consumed = normalizer.locator('[data-field="consumed"]')
        before = consumed.text_content()
        refreshed = page.locator("body").get_attribute("data-refreshed") or ""
        expect(page.locator("body")).not_to_have_attribute("data-refreshed", refreshed, timeout=10_000)
        expect(consumed).not_to_have_text(before or "", timeout=10_000)
        expect(page.locator("#lag-rows tr")).not_to_have_count(0)
        expect(page.locator("#file-rows td.path").first).to_contain_text(".parquet")

        # What flows: a row per real log type with records in and out, a sparkline once two samples exist,
        # and the lake's rows per event hour (the corpus' hours, not today's).
        # (The publisher replays the corpus file by file, so which types flow first depends on its order.)
        busiest = page.locator("#flow-rows tr[data-log-type]").first
        expect(busiest).to_be_visible(timeout=30_000)
        expect(busiest.locator("td").nth(1)).not_to_have_text("0.0", timeout=30_000)  # in/s over the minute
        expect(busiest.locator("td").nth(4)).not_to_have_text("0", timeout=30_000)  # in
        expect(busiest.locator("td").nth(5)).not_to_have_text("0", timeout=30_000)  # out (rows written)
        expect(busiest.locator("svg.spark polyline.series-in")).to_have_count(1, timeout=30_000)
        expect(page.locator("#lake-rows tr").first).not_to_contain_text("no file written yet", timeout=30_000)
        expect(page.locator("#lake-head th").nth(1)).to_have_text(re.compile(r"^20\d\d-\d\d-\d\d \d\dh$"))

        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("ZEEK_PIPELINE_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
            shutil.copyfile(tmp_path / "dashboard.png", PROJECT_ROOT / "docs" / "dashboard.png")

        # Kill the writer: its card turns red (in the DOM and on screen) and the verdict degrades.
        killed = pipeline.procs.pop("parquet-writer")
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        expect(writer).to_have_class("card state-down", timeout=15_000)
        expect(writer.locator(".reason")).to_contain_text("no heartbeat for")
        assert writer.evaluate("e => getComputedStyle(e).borderTopColor") == DOWN_RED
        expect(page.locator("#verdict-state")).to_have_text("degraded")
        expect(page.locator("#reasons")).to_contain_text("parquet-writer no heartbeat for")
        expect(page.locator("#unreachable")).to_be_visible()
        expect(normalizer).to_have_class("card state-ok")
        page.screenshot(path=str(tmp_path / "dashboard-writer-down.png"), full_page=True)
        context.close()

    assert problems == []
    assert outside == []  # everything came from the service itself: no CDN
