"""Response time does not tell how close a guess is: against the real server, a wrong token that
shares all but its last character with a real one and a completely different wrong token take
the same time. No absolute time is asserted: the two are measured in interleaved pairs (in a
random order per pair, so that load drifting on a busy machine hits both alike) and their
difference is tested for being centred on zero (a sign-flip permutation test of the median)."""

from __future__ import annotations

import hashlib
import random
import secrets
import statistics
import time

import httpx

from testing import ServerProcess

PAIRS = 300
ALPHA = 0.001  # how often this test may fail although the times do not differ


def sign_flip_p(differences: list[float], rounds: int = 4000, seed: int = 13) -> float:
    """Two-sided p-value for "the paired differences are centred on 0": how often the median of
    the differences with random signs is at least as far from 0 as the observed one."""
    observed = abs(statistics.median(differences))
    rng = random.Random(seed)
    extreme = 0
    for _ in range(rounds):
        flipped = [d if rng.random() < 0.5 else -d for d in differences]
        if abs(statistics.median(flipped)) >= observed:
            extreme += 1
    return (extreme + 1) / (rounds + 1)


def test_the_statistic_finds_a_shift_and_no_shift_where_there_is_none() -> None:
    """The test below can fail: a shift of a fifth of the noise's spread is found, pure noise
    is not (seeded, so this runs the same every time)."""
    rng = random.Random(7)
    noise = [rng.gauss(0, 1) for _ in range(PAIRS)]
    assert sign_flip_p(noise) > 0.05
    assert sign_flip_p([d + 0.2 for d in noise]) < ALPHA


def timed_status(client: httpx.Client, secret: str) -> tuple[int, float]:
    start = time.perf_counter()
    status = client.get("/v1/events?domain=aussen", headers={"X-Auth": secret}).status_code
    return status, time.perf_counter() - start


def test_wrong_tokens_take_the_same_time_whatever_they_share_with_a_real_one(
        start_server, tmp_path) -> None:
    real = secrets.token_urlsafe(48)  # 64 characters
    near = real[:-1] + ("A" if real[-1] != "A" else "B")  # all but the last character right
    far = secrets.token_urlsafe(48)
    while far[0] == real[0]:
        far = secrets.token_urlsafe(48)
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[token]]\nname = "sensor"\nsha256 = '
                    f'"{hashlib.sha256(real.encode()).hexdigest()}"\nread = ["*"]\n')
    server: ServerProcess = start_server(token=None, env={
        "LEITSTAND_TOKENS_FILE": str(path), "LEITSTAND_READ_RATE_LIMIT": "1000000/second"})
    rng = random.Random()
    differences: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert timed_status(client, real)[0] == 404  # accepted (no such domain yet)
        for _ in range(50):  # warm up: connection, caches, the first requests' allocations
            timed_status(client, near)
            timed_status(client, far)
        for _ in range(PAIRS):
            order = [near, far] if rng.random() < 0.5 else [far, near]
            taken = {}
            for secret in order:
                status, seconds = timed_status(client, secret)
                assert status == 401
                taken[secret] = seconds
            differences.append(taken[near] - taken[far])
    p = sign_flip_p(differences)
    print(f'p={p:.4f} median difference={statistics.median(differences) * 1e6:.1f} us')
    assert p > ALPHA, (p, statistics.median(differences))
