"""Fuzz: thousands of random and mutated bodies, names and parameters; never a 5xx.

In process (the app's own exceptions would surface here as errors) and bounded: a fixed
seed, a fixed number of requests.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import pytest

pytestmark = pytest.mark.anyio
Body = Callable[..., bytes]
REQUESTS = 3000
MSGPACK = {"Content-Type": "application/msgpack"}
_NAME_CHARS = "abcXYZ019._-/%~ é\x00\n*?"


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value, biased toward edge cases."""
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 624, 625, 700]),
        lambda: rng.choice([0.0, -0.0, float("nan"), float("inf"), 1e308, 1.5]),
        lambda: rng.choice(["", "x" * 200, "PCG64", "MT19937", "python", "é\x00"]),
        lambda: rng.randbytes(rng.choice([0, 1, 16, 5056])),
        lambda: msgpack.ExtType(rng.choice([1, 2, 3, 127]), rng.randbytes(rng.randint(0, 40))),
    ]
    if depth < 3:
        choices.append(lambda: [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))])
        choices.append(
            lambda: {
                rng.choice(["state", "key", "pos", "x"]): _value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))
            }
        )
    return rng.choice(choices)()


def _canon(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canon(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def _mutate_structure(rng: random.Random, body: bytes) -> bytes:
    """Change one field deep inside a valid snapshot, and (usually) fix its digest so the
    change reaches the family validators rather than stopping at the digest check."""
    raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
    node = raw
    for _ in range(rng.randint(1, 5)):
        if not isinstance(node, dict) or not node:
            break
        key = rng.choice(sorted(node, key=str))
        if rng.random() < 0.3 or not isinstance(node[key], (dict, list)):
            if rng.random() < 0.2:
                del node[key]
            else:
                node[key] = _value(rng)
            break
        child = node[key]
        node = child if isinstance(child, dict) else {}
    if rng.random() < 0.8 and isinstance(raw.get("states"), dict):
        states = msgpack.packb(_canon(raw["states"]), use_bin_type=True)
        raw["digest"] = hashlib.sha256(states).hexdigest()
    return msgpack.packb(raw, use_bin_type=True)


def _body(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(5)
    base = rng.choice(valid)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 1:
        flipped = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return bytes(flipped)
    if kind == 2:
        return base[: rng.randrange(len(base))]
    if kind == 3:
        return msgpack.packb(_value(rng), use_bin_type=True)
    return _mutate_structure(rng, base)


def _name(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(["s", "epoch1", "a.b-c_d", "x" * 128])
    return "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 140)))


async def test_random_and_mutated_requests_never_get_a_5xx(
    client: httpx.AsyncClient, make_body: Body
) -> None:
    rng = random.Random(20240601)
    valid = [make_body(i, shared=i % 3) for i in range(8)]
    statuses: dict[int, int] = {}
    for n in range(REQUESTS):
        parts = [quote(_name(rng), safe="/" if rng.random() < 0.1 else "") for _ in range(3)]
        url = "/v1/runs/{}/{}/snapshots/{}".format(*parts)
        params = {}
        if rng.random() < 0.2:
            params[rng.choice(["rank", "generators", "cursor", "limit"])] = rng.choice(
                ["-1", "0", "1", "99999999999999999999", "x", "moving,fixed", ",,", "é"]
            )
        if n % 4 == 3:
            headers = {
                "Accept": rng.choice(
                    ["application/json", "*/*", "text/html;q=0.5", "application/json;q=x", ""]
                )
            }
            answer = await client.get(url, params=params, headers=headers)
        else:
            ctype = rng.choice(["application/msgpack"] * 8 + ["text/plain", ""])
            answer = await client.put(
                url, params=params, content=_body(rng, valid), headers={"Content-Type": ctype}
            )
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (url, params, answer.text)
    assert statuses.get(201, 0) > 0 and statuses.get(422, 0) > 100  # both paths were reached
    listing = await client.get("/v1/runs", params={"limit": 1000})
    assert listing.status_code == 200
    for run in listing.json()["runs"]:  # every stored snapshot lists and renders as JSON
        path = f"/v1/runs/{run['namespace']}/{run['run']}/snapshots"
        page = await client.get(path, params={"limit": 1000})
        assert page.status_code == 200
        for snapshot in page.json()["snapshots"]:
            rendered = await client.get(
                f"{path}/{snapshot['name']}", headers={"Accept": "application/json"}
            )
            assert rendered.status_code == 200
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (
        await client.put("/v1/runs/after/fuzz/snapshots/ok", content=valid[0], headers=MSGPACK)
    ).status_code == 201
