"""The console's HTTP side against a real daemon: its routes, its guards, and what `make up` prints.

The page itself is driven in a browser by tests/test_console_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_daemon_helpers import REPO_ROOT, build_model, fast_settings, register, serving_only, wait_for

from mlops import cli
from mlops.backend import APPROVED, PENDING, REJECTED
from mlops.local import build as builds
from mlops.local import daemon, history
from mlops.local.backend import LocalBackend, UpResult
from mlops.local.client import DaemonClient
from mlops.local.registry import LocalRegistry
from mlops.local.runfile import DaemonInfo
from mlops.local.settings import LocalSettings


def _call(
    url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _token(info: DaemonInfo) -> str:
    page = _call(f"{info.base_url}/")[2].decode()
    found = re.search(r'<meta name="console-csrf" content="([^"]+)">', page)
    assert found is not None
    return found[1]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[LocalSettings, DaemonInfo]]:
    """v1 serving, v2 and v3 pending."""
    settings = fast_settings(tmp_path / "home")
    v1 = register(settings, build_model(tmp_path / "m1"), approve=True)
    for n in (2, 3):
        register(settings, build_model(tmp_path / f"m{n}", c=0.5))
    info = daemon.start(settings)
    wait_for(lambda: serving_only(DaemonClient(info).status(), v1), 60, "v1 to serve")
    yield settings, info
    daemon.stop(settings)


def _registry(settings: LocalSettings) -> LocalRegistry:
    return LocalRegistry(settings.db_path, settings.models_dir)


def test_the_page_its_files_and_the_api_description(running: tuple[LocalSettings, DaemonInfo]) -> None:
    _, info = running
    code, headers, page = _call(f"{info.base_url}/")
    assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    token = _token(info)
    assert len(token) >= 40 and token != info.token  # never the control token
    assert info.token not in page.decode()
    code, headers, script = _call(f"{info.base_url}/console/static/app.js")
    assert (code, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert b"x-console-csrf" in script
    # Only the shipped files: no other suffix, no way out of the folder.
    assert _call(f"{info.base_url}/console/static/console.py")[0] == 404
    assert _call(f"{info.base_url}/console/static/..%2Fconsole.py")[0] == 404

    code, _, raw = _call(f"{info.base_url}/openapi.json")
    spec = json.loads(raw)
    assert code == 200 and spec["openapi"].startswith("3.")
    assert spec["servers"][0]["url"] == info.base_url  # where this daemon answers, not port 8000
    assert "/predict" in spec["paths"]
    code, _, docs = _call(f"{info.base_url}/api-docs")
    assert code == 200 and b"/console/static/api-docs.js" in docs

    overview = json.loads(_call(f"{info.base_url}/console/api/overview")[2])
    assert overview["endpoint"]["serving_version"] == 1
    assert overview["split"]["variants"][0] | {"requests": 0} == {
        "version": 1,
        "weight": 1.0,
        "requests": 0,
        "errors": 0,
        "health": "Healthy",
    }
    by_version = {v["version"]: v for v in overview["versions"]}
    assert by_version[1]["serving"] is True and by_version[2]["serving"] is False
    assert by_version[2]["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert set(by_version[2]["diff_vs_serving"]) == {"accuracy"}
    assert by_version[2]["changes_vs_serving"] == ["C 1.0 -> 0.5"]  # the helper's models differ in C only
    assert by_version[2]["approval_outlook"] == {
        "action": "deploy",
        "reason": "deploying version 2",
        "platform_running": True,
        "then": "",
    }
    # The control routes stay behind their own token.
    assert _call(f"{info.base_url}/_platform/status")[0] == 401


def test_approve_and_reject_from_the_page_need_its_token_and_its_origin(
    running: tuple[LocalSettings, DaemonInfo],
) -> None:
    settings, info = running
    token = _token(info)
    approve = f"{info.base_url}/console/api/versions/2/approve"
    good = {"content-type": "application/json", "x-console-csrf": token, "origin": info.base_url}
    refused = [
        (
            {"content-type": "application/json"},
            403,
            "missing or wrong x-console-csrf header (reload the console)",
        ),
        (
            {**good, "x-console-csrf": "guess"},
            403,
            "missing or wrong x-console-csrf header (reload the console)",
        ),
        (
            {**good, "origin": "http://evil.example"},
            403,
            "cross-origin request from http://evil.example refused",
        ),
        ({**good, "sec-fetch-site": "cross-site"}, 403, "only the console's own page may do this"),
        ({**good, "content-type": "text/plain"}, 403, "the body must be application/json"),
        # DNS rebinding: the right address under another name.
        ({**good, "host": "evil.example"}, 421, "the console answers only on its loopback address"),
    ]
    for headers, code, error in refused:
        got = _call(approve, method="POST", body={"description": "x"}, headers=headers)
        assert (got[0], json.loads(got[2])["error"]) == (code, error), headers
    assert _registry(settings).get(settings.group, 2).status == PENDING
    assert _call(f"{info.base_url}/", headers={"host": "evil.example"})[0] == 421

    code, _, raw = _call(
        f"{info.base_url}/console/api/versions/3/reject", method="POST", body={"reason": " "}, headers=good
    )
    assert (code, json.loads(raw)["error"]) == (
        400,
        "a rejection needs a reason, so the next person knows why",
    )

    code, _, raw = _call(approve, method="POST", body={"description": "from the page"}, headers=good)
    answer = json.loads(raw)
    assert code == 200
    assert (answer["model"]["status"], answer["model"]["description"]) == (APPROVED, "from the page")
    assert answer["model"]["approver"].endswith(" (console)")
    assert answer["deployment"]["action"] == "deploy"
    wait_for(
        lambda: serving_only(DaemonClient(info).status(), 2), 120, "v2 to serve after the page's approval"
    )

    code, _, raw = _call(
        f"{info.base_url}/console/api/versions/3/reject",
        method="POST",
        body={"reason": "worse"},
        headers=good,
    )
    assert (code, json.loads(raw)["model"]["status"]) == (200, REJECTED)
    # The registry's rules hold on the page too: a decided version changes only with --force (CLI).
    code, _, raw = _call(
        f"{info.base_url}/console/api/versions/3/approve", method="POST", body={}, headers=good
    )
    assert (code, json.loads(raw)["error"]) == (
        400,
        "version 3 is Rejected, not PendingManualApproval; pass --force to set it to Approved anyway",
    )
    deployments = json.loads(_call(f"{info.base_url}/console/api/deployments")[2])
    assert [(d["from_version"], d["to_version"], d["status"]) for d in deployments] == [
        (None, 1, "Succeeded"),
        (1, 2, "Succeeded"),
    ]

    # The signature gate holds on the page as in `mlops approve`: refused up front unless allowed.
    narrow = register(settings, build_model(Path(settings.home).parent / "m4", kind="three_features"))
    page = f"{info.base_url}/console/api/versions/{narrow}/approve"
    # The page's preview already says what approving would do: refused, and why (it said "deploy").
    overview = json.loads(_call(f"{info.base_url}/console/api/overview")[2])
    (preview,) = [v["approval_outlook"] for v in overview["versions"] if v["version"] == narrow]
    assert preview["action"] == "refuse" and "feature removed: petal_width (number)" in preview["reason"]
    # The page's allowance box goes by the signature alone, not by the outlook (during a shift the outlook
    # is "queue" while approving without the allowance is still refused: a review finding).
    assert {v["version"]: v["needs_allowance"] for v in overview["versions"]} == {
        v["version"]: v["version"] == narrow for v in overview["versions"]
    }
    code, _, raw = _call(page, method="POST", body={"description": "narrow"}, headers=good)
    error = json.loads(raw)["error"]
    assert code == 409 and "feature removed: petal_width (number)" in error, error
    assert f"`mlops approve {narrow} --allow-signature-change`" in error
    assert _registry(settings).get(settings.group, narrow).status == PENDING
    body = {"description": "narrow, meant", "allow_signature_change": True}
    code, _, raw = _call(page, method="POST", body=body, headers=good)
    assert (code, json.loads(raw)["model"]["signature_change_allowed"]) == (200, True)


def test_requests_and_builds_as_the_page_reads_them(running: tuple[LocalSettings, DaemonInfo]) -> None:
    settings, info = running
    client = DaemonClient(info)
    ok = client.predict({"context": "5.1, 3.5, 1.4, 0.2"})
    bad = _call(
        info.predict_url,
        method="POST",
        body=b'{"context": 5}',  # refused by the API itself: no model version answered it
        headers={"content-type": "application/json"},
    )
    assert bad[0] == 400
    rows = json.loads(_call(f"{info.base_url}/console/api/requests?status=4xx")[2])
    assert [r["status_code"] for r in rows] == [400]
    rows = json.loads(_call(f"{info.base_url}/console/api/requests?version=1")[2])
    assert [r["request_id"] for r in rows] == [ok["request_id"]]
    one = json.loads(_call(f"{info.base_url}/console/api/requests/{ok['request_id']}")[2])
    assert (one["status_code"], one["model_version"], json.loads(one["output"])) == (200, "1", ok)
    assert _call(f"{info.base_url}/console/api/requests/{'0' * 8}")[0] == 400

    with builds.BuildStore(settings) as store:
        queued = store.enqueue("c" * 40, ref="refs/heads/main")
        Path(queued.log_path).write_text("line one\nbuild 1 FAILED: no data\n")
        store.finish(queued.id, builds.FAILED, reason="no data")
    listed = json.loads(_call(f"{info.base_url}/console/api/builds")[2])
    assert [(b["id"], b["status"], b["reason"], b["commit"]) for b in listed] == [
        ("1", "Failed", "no data", "c" * 40)
    ]
    log = json.loads(_call(f"{info.base_url}/console/api/builds/1/log")[2])
    assert log == {"lines": ["line one", "build 1 FAILED: no data"]}


def test_the_printed_next_steps_run_as_printed(
    running: tuple[LocalSettings, DaemonInfo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 12, item 3: the steps said `mlops ...` (not on PATH) and the curl was iris-only.
    settings, info = running
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    result = UpResult(
        base_url=info.base_url,
        predict_url=info.predict_url,
        pid=info.pid,
        versions=2,  # so the printed `approve 3` names the pending v3
        serving_version=1,
        example_context=history.example_context(settings, 1),
    )
    # Printed and run in the same directory (the command may be spelled relative to it).
    monkeypatch.chdir(tmp_path)
    # The shell the steps are printed to after `make up`: the user's own PATH, without the venv's bin
    # (make runs .venv/bin/mlops directly; `uv run` would put .venv/bin on the CLI's PATH only, and a
    # bare `mlops` printed from there fails in the user's shell: found by the new-user review).
    venv_bin = str(Path(sys.executable).parent)
    shell_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    monkeypatch.setenv("PATH", shell_path)
    mlops = cli.mlops_command()
    steps = cli.next_steps(result, mlops)
    env = {"MLOPS_HOME": str(settings.home), "PYTHONPATH": str(REPO_ROOT), "PATH": shell_path}
    ran = {}
    for step in steps:
        command = step.split("  #")[0].strip()
        if command.startswith("#") or command.startswith("git push") or " local down" in command:
            continue  # a comment; a push needs a work tree; `local down` would stop this test's daemon
        proc = subprocess.run(
            command, shell=True, capture_output=True, text=True, env=env, cwd=tmp_path, check=False
        )
        ran[command] = (proc.returncode, proc.stdout, proc.stderr)
    curl = next(c for c in ran if c.startswith("curl "))
    answer = json.loads(ran[curl][1])
    assert answer["model_version"] == "1" and len(answer["predictions"]) == 1
    for command, (code, _, err) in ran.items():
        assert code == 0, (command, err)
    assert list(ran)[1:] == [
        f"{mlops} predict '{result.example_context}'",
        f"{mlops} models",
        f"{mlops} approve 3",
        f"{mlops} status --watch",
    ]
    assert ran[f"{mlops} approve 3"][1].startswith("approved v3 ")
    assert serving_only(DaemonClient(info).status(), 3)  # status --watch followed it to the end


def test_up_while_up_says_so_and_ends_with_the_console_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 12, item 6: a second `make up` said "starting the platform daemon" and kept the old one.
    settings = fast_settings(tmp_path / "home")
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    try:
        first = LocalBackend(settings).up()
        assert first.already_running is False
        code = cli.main(["local", "up"])
        out, err = capsys.readouterr()
        assert code == 0
        assert f"the platform daemon is already running (pid {first.pid}, {first.base_url})" in err
        assert "starting the platform daemon" not in err
        assert f"the platform was already running (pid {first.pid}); it keeps the code it started with" in out
        assert out.rstrip().splitlines()[-1].endswith(f"open {first.base_url}/")
    finally:
        daemon.stop(settings)


def test_from_up_to_v2_at_100_percent_with_only_the_console(tmp_path: Path, repo_root: Path) -> None:
    # "Done means": after `make up` (up --bootstrap: v1 serves), the page trains v2, a person
    # approves it there, and the shift ends with v2 serving all traffic; no command in between.
    from test_cli import _project

    settings = fast_settings(tmp_path / "home", traffic_wait_seconds=0.5)
    project = _project(tmp_path, repo_root)
    try:
        up = LocalBackend(settings, cwd=project, approver="bootstrap").up(bootstrap=True)
        assert up.serving_version == 1
        info = daemon.info(settings)
        assert info is not None and info.base_url == up.base_url
        good = {"content-type": "application/json", "x-console-csrf": _token(info), "origin": up.base_url}

        code, _, raw = _call(f"{up.base_url}/console/api/train", method="POST", body={}, headers=good)
        answer = json.loads(raw)
        assert code == 200
        assert answer["build"]["status"] == "Queued" and answer["build"]["id"] == "2"
        assert answer["note"] == "v1 was built from the same commit: expect the same model"
        assert _call(f"{up.base_url}/console/api/train", method="POST", body={})[0] == 403  # no token

        def v2_pending() -> dict[str, Any] | None:
            found = json.loads(_call(f"{up.base_url}/console/api/overview")[2])["versions"]
            return next((v for v in found if v["version"] == 2 and v["status"] == PENDING), None)

        v2 = wait_for(v2_pending, 300, "the page's build to register v2")
        assert v2["approval_outlook"]["action"] == "deploy"
        code, _, raw = _call(
            f"{up.base_url}/console/api/versions/2/approve",
            method="POST",
            body={"description": "ok"},
            headers=good,
        )
        assert (code, json.loads(raw)["deployment"]["action"]) == (200, "deploy")
        wait_for(lambda: serving_only(DaemonClient(info).status(), 2), 180, "v2 at 100%")
    finally:
        daemon.stop(settings)


def test_console_answers_carry_a_request_id_and_a_405_says_what_is_allowed(
    running: tuple[LocalSettings, DaemonInfo],
) -> None:
    # Review finding: POST / answered 403 (a missing CSRF token) instead of 405, and no console
    # answer had the X-Request-Id every answer of the API's port is said to carry.
    _, info = running
    status, headers, _ = _call(f"{info.base_url}/")
    assert status == 200 and len(headers["x-request-id"]) == 36
    status, headers, body = _call(f"{info.base_url}/", method="POST", body={})
    assert (status, headers["allow"]) == (405, "GET")
    assert json.loads(body) == {"error": "POST is not allowed on /; use GET"}
    assert len(headers["x-request-id"]) == 36
    status, headers, _ = _call(f"{info.base_url}/console/api/versions/2/approve", method="DELETE")
    assert (status, headers["allow"]) == (405, "POST")
    status, headers, _ = _call(f"{info.base_url}/console/api/versions/2/approve")
    assert (status, headers["allow"]) == (405, "POST")
    # A write route still wants its token: the order of the checks did not open it.
    status, _, body = _call(f"{info.base_url}/console/api/versions/2/approve", method="POST", body={})
    assert status == 403 and "x-console-csrf" in json.loads(body)["error"]
