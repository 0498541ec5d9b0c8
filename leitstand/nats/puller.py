"""Pulling from the sink's durable consumer: its config, and pull requests answered into one
callback subscription."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from ..config import Settings

# A pull request's byte budget: messages are whole batches (up to the server's max_payload,
# at most 64 MB), so the message count alone would not bound the sink's memory. Above the
# largest possible message, so a single one always fits.
_PULL_MAX_BYTES = 80 * 1024 * 1024


def consumer_config(settings: Settings, start: int | None = None) -> api.ConsumerConfig:
    """The sink's durable consumer; `start`: begin at this stream sequence (else the first)."""
    return api.ConsumerConfig(
        durable_name=settings.nats_consumer,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start else api.DeliverPolicy.ALL,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=20_000,
        filter_subject=f"{settings.nats_stream}.>",
    )


class Puller:
    """Pull requests to the durable consumer, answered into one callback subscription.

    nats-py's `fetch` spends a task and a timer on every message; this costs about a quarter
    of that. All requests share one inbox, so a message that arrives after its request ended
    is simply part of the next batch (the sink orders by stream sequence anyway)."""

    def __init__(self, client: NatsClient, stream: str, consumer: str) -> None:
        self._client = client
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = client.new_inbox()
        self._msgs: list[Msg] = []
        self._ended = asyncio.Event()
        self._want = 0
        self._sub: Any = None

    async def start(self) -> Puller:
        self._sub = await self._client.subscribe(self._inbox, cb=self._on_message)
        return self

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None and msg.reply:
            self._msgs.append(msg)
        if status not in (None, "100") or len(self._msgs) >= self._want:
            self._ended.set()  # 404 no messages, 408 expired, 409 ...: this request is over

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """What is there now (up to `batch`); if nothing, wait up to `timeout` for the first."""
        for request in ({"batch": batch, "max_bytes": _PULL_MAX_BYTES, "no_wait": True},
                        {"batch": batch, "max_bytes": _PULL_MAX_BYTES,
                         "expires": int(timeout * 1e9)}):
            if not self._msgs:
                self._want = batch if "no_wait" in request else 1
                self._ended.clear()
                await self._client.publish(self._subject, orjson.dumps(request),
                                           reply=self._inbox)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), timeout + 0.5)
            if self._msgs:
                msgs, self._msgs = self._msgs, []
                return msgs
        return []

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
