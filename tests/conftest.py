"""Shared fixtures: a fresh app per test (in-process) and the real server (a process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from leitstand.app import create_app
from leitstand.config import Settings
from testing import ServerProcess

TOKEN = "test-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    """Settings for a test: a tmp data dir, the test token, a generous rate limit."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "token": TOKEN, "data_dir": data_dir, "rate_limit": "100000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
async def make_client(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """Build an app from settings overrides and an httpx client talking to it in-process."""
    apps: list[FastAPI] = []
    clients: list[httpx.AsyncClient] = []

    def make(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(make_settings(**overrides))
        apps.append(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers={"X-Auth": TOKEN},
        )
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for app in apps:
        await app.state.service.store.close()


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The real service as a process (`uvicorn app:app`), stopped by PID afterwards."""
    proc = ServerProcess(tmp_path / "data", token=TOKEN)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers (ServerProcess keyword arguments; `data_dir` defaults to a fresh
    one); every one is stopped by its PID afterwards."""
    started: list[ServerProcess] = []

    def run(**kwargs: Any) -> ServerProcess:
        data_dir = kwargs.pop("data_dir", tmp_path / f"data{len(started)}")
        proc = ServerProcess(data_dir, **kwargs)
        started.append(proc)
        return proc.start()

    try:
        yield run
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def start(start_server: Callable[..., ServerProcess]) -> Callable[..., ServerProcess]:
    """Short name for `start_server`."""
    return start_server
