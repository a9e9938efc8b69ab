"""Shared fixtures. No boto3 client is created at import time anywhere in the project."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _a_current_event_loop() -> None:
    """Pulumi's runtime (the mocks) asks for the current event loop, and an asyncio.run() in an
    earlier test leaves none set (it ends with set_event_loop(None)): each test starts with one."""
    policy = asyncio.get_event_loop_policy()
    try:
        policy.get_event_loop()
    except RuntimeError:
        policy.set_event_loop(policy.new_event_loop())


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and region, and no instance-metadata lookups, for moto-backed tests."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield


@pytest.fixture
def moto_aws(aws_env: None) -> Iterator[None]:
    """Every boto3 call inside the test goes to moto's in-memory AWS."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def start_load(request: pytest.FixtureRequest) -> Iterator[Any]:
    """start(url, out): the load generator at the test module's RATE; every one started is stopped."""
    from local_daemon_helpers import Load

    rate = float(request.module.RATE)
    started: list[Load] = []

    def start(url: str, out: Path) -> Load:
        started.append(Load(url, rate, out))
        return started[-1]

    yield start
    for load in started:
        load.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_configure(config: pytest.Config) -> None:
    # Keep tests hermetic: never pick up a developer's real AWS profile.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
