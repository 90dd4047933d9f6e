"""Admin API error answers: a reason of any length arrives, bounded, its ends kept."""

from __future__ import annotations

import sqlite3

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from controlplane.admin.errors import MESSAGE_LIMIT, install_error_handlers
from controlplane.errors import ModelLoadFailed, ModelNotFound, StoreUnavailable


def _client() -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/store/{how}")
    async def store(how: str) -> None:
        if how == "raw":  # a store error no bounded call wrapped
            raise OperationalError("INSERT INTO requests (model) VALUES (?)", ("secret",),
                                   sqlite3.OperationalError("database or disk is full"))
        raise StoreUnavailable("the store did not answer within 2s (its disk is stalled)")

    @app.get("/fail/{name}")
    async def fail(name: str, size: int = 0) -> None:
        if size:
            raise ModelLoadFailed(name, "RuntimeError: root cause\n" + "x" * size + "\nLAST")
        raise ModelNotFound(name)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_a_huge_reason_arrives_bounded_with_its_start_and_end() -> None:
    async with _client() as client:
        answer = await client.get("/fail/ranker", params={"size": 1_000_000})
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["model"] == "ranker"
    assert error["message"].startswith("model 'ranker' failed to load: RuntimeError: root cause")
    assert error["message"].endswith("x\nLAST")
    assert len(error["message"]) <= MESSAGE_LIMIT


async def test_a_long_model_name_is_not_echoed_in_full() -> None:
    async with _client() as client:
        answer = await client.get("/fail/" + "n" * 5000)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["message"] == ("Request for unknown model: "
                                f"'{'n' * 100}...(5000 characters)' is not found")
    assert error["model"] == "n" * 100 + "...(5000 characters)"


async def test_a_store_failure_is_a_503_naming_the_store_problem_not_sqlalchemys_text() -> None:
    async with _client() as client:
        raw = await client.get("/store/raw")
        stalled = await client.get("/store/stalled")
    assert raw.status_code == 503 and stalled.status_code == 503
    assert raw.json() == {"error": {"code": "unavailable",
                                    "message": "the store failed: database or disk is full"}}
    assert stalled.json()["error"]["message"] == (
        "the store did not answer within 2s (its disk is stalled)")
