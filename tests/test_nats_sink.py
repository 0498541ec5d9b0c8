"""The sink: same files as the embedded store, exactly once across its crash windows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from leitstand.config import Settings
from leitstand.domains import data_file_name
from leitstand.nats.domainsink import DataDir, DomainSink
from leitstand.nats.seqlog import Mark
from leitstand.nats.sink import Sink, _domain
from testing import NatsCluster, SinkProcess

from .conftest import TOKEN

LINES = [b'{"event":%d,"domain":"aussen"}\n' % i for i in range(1, 6)]


def sink_for(data: Path) -> DomainSink:
    data.mkdir(parents=True, exist_ok=True)
    (data / ".leitstand").mkdir(exist_ok=True)
    dir_fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    helper_fd = os.open(data / ".leitstand", os.O_RDONLY | os.O_DIRECTORY)
    return DomainSink("aussen", dir_fd, helper_fd, fsync=True, lock_timeout=2.0)


def crash(sink: DomainSink) -> None:
    """What a kill leaves: descriptors gone, nothing else done."""
    sink.close_all()


def plant_mark(data: Path, seq: int, payload: bytes) -> None:
    """The record a sink appends (and fsyncs) just before it writes `payload`."""
    size = (data / "aussen.jsonl").stat().st_size
    ino = (data / "aussen.jsonl").stat().st_ino
    mark = Mark(seq, size, len(payload), hashlib.sha256(payload).hexdigest(), ino)
    with open(data / ".leitstand" / "aussen.seq", "ab") as f:
        f.write(mark.to_line())


def test_killed_after_fsync_before_ack_writes_nothing_twice(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    assert sink.apply([(1, LINES[0]), (2, LINES[1])]) == 2
    crash(sink)
    # JetStream redelivers 1 and 2 (never acked) together with the new 3.
    again = sink_for(tmp_path)
    assert again.apply([(1, LINES[0]), (2, LINES[1]), (3, LINES[2])]) == 1
    assert (tmp_path / "aussen.jsonl").read_bytes() == b"".join(LINES[:3])


def test_the_sinks_metrics_count_what_it_stored_not_what_was_redelivered(
        tmp_path: Path) -> None:
    data = DataDir(tmp_path, fsync=True, lock_timeout=1.0)
    try:
        assert data.apply([(1, "aussen", LINES[0]), (2, "aussen", LINES[1])]) == 2
        assert data.apply([(2, "aussen", LINES[1]), (3, "aussen", LINES[2])]) == 1
        text = data.metrics.render().decode()
        assert 'leitstand_events_total{domain="aussen"} 3.0' in text
        size = sum(len(line) for line in LINES[:3])
        assert f'leitstand_bytes_total{{domain="aussen"}} {float(size)}' in text
    finally:
        data.close()


def test_killed_between_record_and_data_writes_the_messages_once(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    sink.apply([(1, LINES[0])])
    crash(sink)
    plant_mark(tmp_path, 3, LINES[1] + LINES[2])  # then killed before the data write
    again = sink_for(tmp_path)
    assert again.apply([(2, LINES[1]), (3, LINES[2])]) == 2
    crash(again)
    third = sink_for(tmp_path)  # and once more: now it is landed
    assert third.apply([(2, LINES[1]), (3, LINES[2]), (4, LINES[3])]) == 1
    assert (tmp_path / "aussen.jsonl").read_bytes() == b"".join(LINES[:4])
    assert (tmp_path / ".leitstand" / "aussen.seq").read_bytes().count(b"\n") <= 3


@pytest.mark.parametrize(
    "torn", [LINES[1], LINES[1] + LINES[2][:7]], ids=["whole-line", "mid-line"]
)
def test_killed_mid_write_cuts_the_torn_group_and_writes_it_once(
    tmp_path: Path, torn: bytes
) -> None:
    sink = sink_for(tmp_path)
    sink.apply([(1, LINES[0])])
    crash(sink)
    plant_mark(tmp_path, 3, LINES[1] + LINES[2])
    with open(tmp_path / "aussen.jsonl", "ab") as f:
        f.write(torn)  # part of the group reached the file
    again = sink_for(tmp_path)
    assert again.apply([(2, LINES[1]), (3, LINES[2])]) == 2
    assert (tmp_path / "aussen.jsonl").read_bytes() == b"".join(LINES[:3])
    quarantine = (tmp_path / ".leitstand" / "aussen.quarantine").read_bytes()
    assert quarantine.startswith(torn)


def test_a_message_of_several_lines_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """A message is a batch: killed after its first line reached the file, the sink cuts that
    complete line too and writes the whole message again (and counts its lines)."""
    sink = sink_for(tmp_path)
    assert sink.apply([(1, LINES[0])]) == 1
    crash(sink)
    batch = LINES[1] + LINES[2] + LINES[3]
    plant_mark(tmp_path, 2, batch)
    with open(tmp_path / "aussen.jsonl", "ab") as f:
        f.write(batch[:len(LINES[1]) + 5])  # one whole line of the batch and a torn one
    again = sink_for(tmp_path)
    assert again.apply([(2, batch), (3, LINES[4])]) == 4
    assert (tmp_path / "aussen.jsonl").read_bytes() == b"".join(LINES)
    quarantine = (tmp_path / ".leitstand" / "aussen.quarantine").read_bytes()
    assert quarantine.startswith(LINES[1])
    crash(again)
    third = sink_for(tmp_path)  # redelivered after a crash before the ack: nothing twice
    assert third.apply([(2, batch), (3, LINES[4])]) == 0
    assert (tmp_path / "aussen.jsonl").read_bytes() == b"".join(LINES)


def test_only_batches_of_whole_lines_are_written() -> None:
    assert _domain("s", "s.aussen", LINES[0] + LINES[1]) == "aussen"
    assert _domain("s", "s.aussen", LINES[0]) == "aussen"
    for data in (b"", LINES[0][:-1], LINES[0] + b"\n", b"\n" + LINES[0], LINES[0] + b"{"):
        assert _domain("s", "s.aussen", data) is None
    assert _domain("s", "s.Aussen", LINES[0]) is None


def test_a_torn_line_of_another_writer_goes_to_quarantine(tmp_path: Path) -> None:
    sink = sink_for(tmp_path)
    sink.apply([(1, LINES[0])])
    with open(tmp_path / "aussen.jsonl", "ab") as f:
        f.write(b'{"half":')
    sink.apply([(2, LINES[1])])
    assert (tmp_path / "aussen.jsonl").read_bytes() == LINES[0] + LINES[1]
    assert (tmp_path / ".leitstand" / "aussen.quarantine").read_bytes() == b'{"half":\n'


def test_one_sink_per_data_dir(tmp_path: Path) -> None:
    first = DataDir(tmp_path, fsync=True, lock_timeout=1.0)
    try:
        with pytest.raises(SystemExit, match="another sink"):
            DataDir(tmp_path, fsync=True, lock_timeout=1.0)
    finally:
        first.close()


# -- the sink follows the store's file protocol (each of these once drifted apart) -------------
def test_the_sink_refuses_a_symlinked_helper_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", data / ".leitstand")
    with pytest.raises(RuntimeError, match="not a directory"):
        DataDir(data, fsync=True, lock_timeout=1.0)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The fsync calls made from now on, as (call, path of the file); the calls still happen."""
    calls: list[tuple[str, str]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def spy(fd: int, real: Callable[[int], None] = real, name: str = name) -> None:
            calls.append((name, os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        monkeypatch.setattr(os, name, spy)
    return calls


def write_repair_and_recover(data: Path) -> None:
    """A first write (new data file, new sequence log), a torn line of another writer (a new
    quarantine file), and a restart after a write the sink did not finish (a cut)."""
    sink = DataDir(data, fsync=data.name == "always", lock_timeout=2.0)
    try:
        sink.apply([(1, "aussen", LINES[0])])
        with open(data / "aussen.jsonl", "ab") as f:
            f.write(b'{"half":')
        sink.apply([(2, "aussen", LINES[1])])
    finally:
        sink.close()
    plant_mark(data, 4, LINES[2] + LINES[3])
    with open(data / "aussen.jsonl", "ab") as f:
        f.write(LINES[2])
    again = DataDir(data, fsync=data.name == "always", lock_timeout=2.0)
    try:
        assert again.apply([(3, "aussen", LINES[2]), (4, "aussen", LINES[3])]) == 2
    finally:
        again.close()
    assert (data / "aussen.jsonl").read_bytes() == b"".join(LINES[:4])
    assert (data / ".leitstand" / "aussen.quarantine").read_bytes() == b'{"half":\n' + LINES[2]


@pytest.mark.parametrize("fsync", ["off", "always"])
def test_the_sink_honours_fsync_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    fsync: str) -> None:
    """LEITSTAND_FSYNC=off: no fsync at all once the data dir exists, for writes and repairs
    alike (`always` is the control: the same steps do fsync)."""
    data = tmp_path / fsync
    DataDir(data, fsync=False, lock_timeout=1.0).close()  # creates the dirs (always durably)
    calls = count_fsyncs(monkeypatch)
    write_repair_and_recover(data)
    if fsync == "off":
        assert calls == []
    else:
        data_file, quarantine = data / "aussen.jsonl", data / ".leitstand" / "aussen.quarantine"
        assert calls.count(("fdatasync", str(data_file))) >= 3  # two writes, the cut
        assert ("fsync", str(data)) in calls  # the new data file's name
        # the new quarantine file's name is durable before the data is cut
        first = next(i for i, (_, path) in enumerate(calls) if path == str(quarantine))
        assert calls[first + 1] == ("fsync", str(data / ".leitstand"))


# -- with a real nats-server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def nats_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def nats_settings(cluster: NatsCluster, data: Path, stream: str) -> Settings:
    return Settings(_env_file=None, token=TOKEN, data_dir=data, backend="nats",  # type: ignore[call-arg]
                    nats_url=cluster.urls, nats_stream=stream, nats_replicas=1,
                    nats_consumer=f"{stream}-sink", nats_timeout=2.0)


async def wait_for_file(path: Path, expected: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    content = b""
    while time.monotonic() < deadline:
        content = path.read_bytes() if path.exists() else b""
        if len(content) >= len(expected):
            return content
        await asyncio.sleep(0.05)
    return content


@pytest.mark.anyio
async def test_sink_files_equal_the_embedded_stores_files(
    nats_single: NatsCluster, tmp_path: Path, make_client
) -> None:
    """The same requests through jsonl and through nats + sink give byte-identical files."""
    long_domain = ".".join(["abcdefghij" * 6] * 4)  # longer than a plain file stem
    requests = [("aussen", [{"event": "a"}, {"t": 1.5, "ok": True}]),
                ("sensor.home.lan", [{"event": "b"}]),
                (long_domain, [{"event": "long"}]),
                ("aussen", [{"event": "c", "nested": {"x": [1, 2]}}])]
    embedded = make_client(data_dir=tmp_path / "jsonl")
    clustered = make_client(backend="nats", nats_url=nats_single.urls, nats_stream="same",
                            nats_replicas=1, data_dir=tmp_path / "ingest")
    for domain, events in requests:
        for client in (embedded, clustered):
            response = await client.post(f"/v1/ingest?domain={domain}", json=events)
            assert response.status_code == 202
    sink = SinkProcess(tmp_path / "sink", {
        "LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
        "LEITSTAND_NATS_STREAM": "same", "LEITSTAND_NATS_REPLICAS": "1",
    }, tmp_path / "sink.log")
    try:
        sink.start()
        for domain in ("aussen", "sensor.home.lan", long_domain):
            name = data_file_name(domain)
            expected = (tmp_path / "jsonl" / name).read_bytes()
            got = await wait_for_file(tmp_path / "sink" / name, expected, timeout=20)
            assert got == expected, sink.log()
    finally:
        sink.stop()


async def publish_and_lose_first(cluster: NatsCluster, settings: Settings):  # type: ignore[no-untyped-def]
    """Publish LINES; a consumer delivers message 1 to a subscriber that never acks it."""
    from leitstand.nats.connection import ensure_stream
    from leitstand.nats.puller import consumer_config

    nc = await nats.connect(cluster.urls)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    for line in LINES:
        await js.publish(f"{settings.nats_stream}.aussen", line)
    await js.add_consumer(settings.nats_stream, consumer_config(settings))
    sub = await js.pull_subscribe_bind(durable=settings.nats_consumer, stream=settings.nats_stream)
    assert len(await sub.fetch(1, timeout=5)) == 1  # delivered, never acked (ack_wait 30 s)
    return nc, js, sub


@pytest.mark.anyio
async def test_messages_a_dead_sink_never_acked_are_written_at_once_in_order(
    nats_single: NatsCluster, tmp_path: Path
) -> None:
    """Without re-anchoring, message 1 would come back only after ack_wait (30 s): filled in
    from the stream, but left unacknowledged until then."""
    settings = nats_settings(nats_single, tmp_path / "data", "dead")
    nc, js, _ = await publish_and_lose_first(nats_single, settings)
    data = DataDir(settings.data_dir, fsync=True, lock_timeout=2.0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(Sink(settings, data).run(stop))
    try:
        got = await wait_for_file(settings.data_dir / "aussen.jsonl", b"".join(LINES), 10)
        assert got == b"".join(LINES)
        deadline = time.monotonic() + 10
        while True:
            info = await js.consumer_info(settings.nats_stream, settings.nats_consumer)
            if info.ack_floor.stream_seq == len(LINES) and info.num_ack_pending == 0:
                break
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        data.close()
        await nc.close()


@pytest.mark.anyio
async def test_a_message_lost_in_transit_is_filled_from_the_stream_in_order(
    nats_single: NatsCluster, tmp_path: Path
) -> None:
    """The sink holds 2..5 but 1 never reached it: 1 is read from the stream and written
    first, so no domain's sequence ever skips a message."""
    settings = nats_settings(nats_single, tmp_path / "data", "gap")
    nc, js, sub = await publish_and_lose_first(nats_single, settings)
    data = DataDir(settings.data_dir, fsync=True, lock_timeout=2.0)
    try:
        later = await sub.fetch(4, timeout=5)
        assert [m.metadata.sequence.stream for m in later] == [2, 3, 4, 5]
        sink = Sink(settings, data)
        for msg in later:  # as `_step` files them
            sink._pending[msg.metadata.sequence.stream] = (msg.subject, msg.data, msg)
        run = await sink._take_run(js)
        assert [(seq, msg is None) for seq, _, _, msg in run] == [
            (1, True), (2, False), (3, False), (4, False), (5, False)
        ]
        await sink._write(run, asyncio.Event())
        assert (settings.data_dir / "aussen.jsonl").read_bytes() == b"".join(LINES)
    finally:
        data.close()
        await nc.close()


@pytest.mark.anyio
async def test_the_sinks_log_lines_are_escaped(nats_single: NatsCluster, tmp_path: Path) -> None:
    """A control character in what the sink logs (here a subject, chosen by whoever publishes)
    can neither forge a log line nor reach a terminal: the sink logs as the service does."""
    sink = SinkProcess(tmp_path / "data", {
        "LEITSTAND_BACKEND": "nats", "LEITSTAND_NATS_URL": nats_single.urls,
        "LEITSTAND_NATS_STREAM": "escaped", "LEITSTAND_NATS_REPLICAS": "1",
        "LEITSTAND_NATS_CONSUMER": "escaped-sink",
    }, tmp_path / "sink.log")
    nc = await nats.connect(nats_single.urls)
    try:
        sink.start()
        js = nc.jetstream()
        await js.publish("escaped.x\x1b[2Kforged", b"not a batch")
        await js.publish("escaped.aussen", LINES[0])
        await wait_for_file(tmp_path / "data" / "aussen.jsonl", LINES[0], timeout=20)
        log = sink.log_path.read_bytes()
        assert b"escaped.x\\x1b[2Kforged" in log, log
        assert b"\x1b" not in log
    finally:
        sink.stop()
        await nc.close()
