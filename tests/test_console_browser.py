"""The console in a real browser: headless Chromium drives the page of a real daemon.

It loads, shows the serving version and the split, a person approves the pending v2 from the page,
and the LINEAR shift appears until v2 has all the traffic: from `make up` to an approved v2 at 100%
with nothing but the page.

Driver: Selenium 4 with Debian's chromium-driver, which Debian builds from the same source and version
as its chromium package (no driver download at test time, no Node toolchain). `make test` installs
both first (`make browser`); without them this test fails and says how to install them, it is never
skipped. MLOPS_CONSOLE_SCREENSHOT=docs/console.png also saves the README's picture of the shift.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import (
    REPO_ROOT,
    Load,
    build_model,
    fast_settings,
    pid_alive,
    serving_only,
    wait_for,
)

from mlops.local import build as builds
from mlops.local import daemon
from mlops.local.client import DaemonClient
from mlops.local.registry import LocalRegistry
from mlops.local.settings import LocalSettings
from mlops.local.state import StateStore

INSTALL_HINT = (
    "the console's browser test needs Debian's chromium and chromium-driver: run `make browser` "
    "(as root it runs `apt-get install -y chromium chromium-driver`), or install both yourself"
)
# Generous: the machine is shared, and Chromium's first start is slow.
PAGE_SECONDS = 60
SHIFT_SECONDS = 180


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{' / '.join(names)} not found on PATH; {INSTALL_HINT}", pytrace=False)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1700",
    ):
        options.add_argument(flag)
    # The page's console messages, so a CSP violation or a script error fails the test.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalSettings]:
    # Each step lasts long enough for the page (polling every second) to show it; four instances make
    # four LINEAR steps of 25% for the page to show.
    settings = fast_settings(
        tmp_path / "home",
        traffic_wait_seconds=3.0,
        termination_wait_seconds=1.0,
        endpoint_initial_instance_count=4,
    )
    yield settings
    daemon.stop(settings)


def _text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("css selector", css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _shares(driver: Any) -> dict[str, str]:
    """The split bar as the page shows it: {version: "v2 25%"}."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return {
            str(seg.get_attribute("data-version")): str(seg.text)
            for seg in driver.find_elements("css selector", "#split-bar .segment[data-version]")
        }
    except StaleElementReferenceException:  # redrawn between the find and the read
        return {}


def _history(settings: LocalSettings, tmp_path: Path) -> tuple[int, int]:
    """v1 approved and v2 pending, each from its build (and one build that failed the gate), as a
    push leaves them, so the page (and the README's picture of it) shows a platform in use."""
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    made = []
    try:
        with builds.BuildStore(settings) as store:
            for n, (commit, c) in enumerate((("3f1c2a9e" * 5, 1.0), ("a7d04be1" * 5, 0.5)), start=1):
                build = store.enqueue(commit, ref="refs/heads/main")
                data = f"{settings.repo_path}#{commit}:data/iris.csv"
                model = registry.register(
                    settings.group,
                    build_model(tmp_path / f"m{n}", c=c),
                    metrics={"accuracy": 0.9667 - n / 100, "f1_macro": 0.9665 - n / 100},
                    source_commit=commit,
                    data_location=data,
                )
                store.finish(build.id, builds.SUCCEEDED, model_version=model.version)
                made.append(model.version)
                if n == 1:
                    registry.set_status(
                        settings.group, model.version, "Approved", approver="mlops local up (bootstrap)"
                    )
                    failed = store.enqueue("0b9e77c4" * 5, ref="refs/heads/main")
                    store.finish(
                        failed.id, builds.FAILED, reason="test accuracy 0.8333 is below the quality gate 0.9"
                    )
    finally:
        registry.close()
    return made[0], made[1]


def test_without_chromium_the_test_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        _binary("no-such-chromium")
    assert str(failed.value) == f"no-such-chromium not found on PATH; {INSTALL_HINT}"
    # And `make browser` (a step of `make test`), when it may not install them, says what to run.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (fake / "id").chmod(0o755)
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "browser", "CHROMIUM=no-such-chromium"],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.splitlines()[:2] == [
        "make test needs chromium chromium-driver for the console's browser test: run",
        "  sudo apt-get install -y chromium chromium-driver    (Debian/Ubuntu; as root, make test does it)",
    ]


def test_a_person_goes_from_v1_serving_to_v2_at_100_percent_with_only_the_page(
    browser: Any, platform: LocalSettings, tmp_path: Path
) -> None:
    began = time.monotonic()
    v1, v2 = _history(platform, tmp_path)
    info = daemon.start(platform)
    client = DaemonClient(info)
    wait_for(lambda: serving_only(client.status(), v1), 60, "v1 to serve")
    load = Load(info.predict_url, 20, tmp_path / "load.jsonl")
    try:
        browser.get(f"{info.base_url}/")
        wait_for(
            lambda: browser.find_element("css selector", "body").get_attribute("data-loaded"),
            PAGE_SECONDS,
            "the page to load",
        )
        assert _text(browser, "#serving-version") == "v1"
        assert _text(browser, "#endpoint-status") == "InService"
        assert wait_for(
            lambda: _shares(browser) == {"1": "v1 100%"}, PAGE_SECONDS, "the split to show v1 at 100%"
        )
        # The versions, side by side: v2 pending with its approve button, v1 marked serving.
        assert "serving" in _text(browser, '#versions tr[data-version="1"]')
        assert "PendingManualApproval" in _text(browser, '#versions tr[data-version="2"]')

        browser.find_element("css selector", 'input.note[data-version="2"]').send_keys("holdout is better")
        browser.find_element("css selector", 'button.approve[data-version="2"]').click()
        notice = wait_for(lambda: _text(browser, "#notice"), PAGE_SECONDS, "the approval's answer")
        assert notice.startswith(f"approved v{v2} as ")
        assert notice.endswith("the deployer starts a LINEAR blue/green shift to it")

        # The shift appears: both versions in the bar, v2 at one of the LINEAR steps below 100%.
        def mid_shift() -> dict[str, str] | None:
            shares = _shares(browser)
            stepping = shares.keys() == {"1", "2"} and shares["2"] in ("v2 25%", "v2 50%", "v2 75%")
            return shares if stepping else None

        mid = wait_for(mid_shift, SHIFT_SECONDS, "the page to show the split during the shift")
        assert mid["1"] in ("v1 75%", "v1 50%", "v1 25%")
        # Drawn, not only written: the segments share the bar's width (the page's CSP allows no
        # inline style attribute, so a width set the wrong way would be zero).
        bar = browser.find_element("css selector", "#split-bar").size["width"]
        drawn = [seg.size["width"] for seg in browser.find_elements("css selector", "#split-bar .segment")]
        assert len(drawn) == 2 and all(w > 0 for w in drawn) and abs(sum(drawn) - bar) <= 2
        assert "shifting: v2" in _text(browser, "#deployment-message")
        if os.environ.get("MLOPS_CONSOLE_SCREENSHOT"):
            wait_for(lambda: _shares(browser).get("2") in ("v2 50%", "v2 75%"), SHIFT_SECONDS, "a later step")
            time.sleep(1.5)  # one more poll, so the charts hold a few samples of the shift
            browser.save_screenshot(os.environ["MLOPS_CONSOLE_SCREENSHOT"])

        wait_for(lambda: _shares(browser) == {"2": "v2 100%"}, SHIFT_SECONDS, "v2 at 100% on the page")
        wait_for(
            lambda: _text(browser, "#serving-version") == "v2", PAGE_SECONDS, "the page to say v2 serves"
        )
        # Per-version traffic of the deployment: both versions answered requests during the shift.
        wait_for(
            lambda: all(
                _text(browser, f'#traffic tr[data-version="{v}"] td.requests') not in ("", "0")
                for v in ("1", "2")
            ),
            PAGE_SECONDS,
            "request counts of both versions",
        )
        assert "Succeeded" in _text(browser, "#deployments tbody tr:first-child")
        # A model server that hangs: the page says so while the supervisor restarts it, then clears.
        store = StateStore(platform.db_path, platform.endpoint_name)
        try:
            hung = next(r.pid for r in store.variants() if r.model_version == v2 and r.pid)
        finally:
            store.close()
        os.kill(hung, signal.SIGSTOP)
        try:
            warned: str = wait_for(
                lambda: (
                    _text(browser, "#health-notes")
                    if "holds 100%" in _text(browser, "#health-notes")
                    else None
                ),
                SHIFT_SECONDS,
                "the page to warn that v2 is down",
            )
            assert warned.startswith("v2 holds 100% of traffic but is ")
            wait_for(lambda: _text(browser, "#health-notes") == "", SHIFT_SECONDS, "the warning to clear")
        finally:
            if pid_alive(hung):
                os.kill(hung, signal.SIGCONT)
        assert [v.restarts for v in client.status().variants] == [1]
        # The split over time is drawn: a line for each version.
        lines = browser.find_elements("css selector", "#split-chart polyline")
        assert {line.get_attribute("data-version") for line in lines} >= {"1", "2"}
        # The API's readable page, from the OpenAPI description this daemon serves.
        browser.get(f"{info.base_url}/api-docs")
        wait_for(
            lambda: browser.find_element("css selector", "body").get_attribute("data-loaded"),
            PAGE_SECONDS,
            "the API page to load",
        )
        assert _text(browser, "section.operation h2").startswith("POST /predict")
        assert info.base_url in _text(browser, "#docs section:first-child")
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == []
    finally:
        load.close()
    registry = LocalRegistry(platform.db_path, platform.models_dir)
    try:
        signed = registry.get(platform.group, v2)
    finally:
        registry.close()
    assert (signed.status, signed.description) == ("Approved", "holdout is better")
    assert signed.approver is not None and signed.approver.endswith("(console)")
    assert serving_only(client.status(), v2)
    _allowance_from_the_page(browser, platform, info.base_url, tmp_path)
    print(f"browser test: {time.monotonic() - began:.1f} s")


def _allowance_from_the_page(browser: Any, settings: LocalSettings, base_url: str, tmp_path: Path) -> None:
    """A version that drops a feature: the page offers the allowance only there, approving without it is
    refused with the reason, and with the box ticked the approval records it (a review found no way to
    give it from the page, though its API took it)."""
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        narrow = registry.register(
            settings.group, build_model(tmp_path / "m3", kind="three_features"), metrics={"accuracy": 0.95}
        ).version
    finally:
        registry.close()
    browser.get(f"{base_url}/")
    box = f'input.allow[data-version="{narrow}"]'
    wait_for(lambda: browser.find_elements("css selector", box), PAGE_SECONDS, "the allowance box")
    assert browser.find_elements("css selector", "input.allow") == browser.find_elements("css selector", box)
    assert "feature removed: petal_width (number)" in _text(browser, f'#versions tr[data-version="{narrow}"]')
    browser.find_element("css selector", f'button.approve[data-version="{narrow}"]').click()
    refused = wait_for(
        lambda: _text(browser, "#notice") if "refused" in _text(browser, "#notice") else None,
        PAGE_SECONDS,
        "the refusal",
    )
    assert refused.startswith(f"approve v{narrow} refused: ") and "--allow-signature-change" in refused
    browser.find_element("css selector", box).click()
    browser.find_element("css selector", f'button.approve[data-version="{narrow}"]').click()
    wait_for(
        lambda: _text(browser, "#notice").startswith(f"approved v{narrow} as "), PAGE_SECONDS, "the approval"
    )
    registry = LocalRegistry(settings.db_path, settings.models_dir)
    try:
        allowed = registry.get(settings.group, narrow)
    finally:
        registry.close()
    assert (allowed.status, allowed.signature_change_allowed) == ("Approved", True)
