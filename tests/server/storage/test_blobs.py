"""Blobs in an S3 bucket (``S3Blobs``) against a real SeaweedFS on loopback: round trips,
idempotent puts, concurrent gets, deletes, the gc listing's grace period, the health check,
and every failure a ``BlobError`` naming the blob and the bucket (missing, corrupt,
unreachable, refused); bad URLs and a missing obstore refused with clear messages."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import itertools
import socket
import sys

import pytest

from rngvault._errors import MissingExtraError, StoreError
from rngvault.server.storage.blobs import (
    BlobDigestError,
    BlobError,
    BlobsUrlError,
    S3Blobs,
    blob_key,
    parse_blobs_url,
)
from tests import _seaweed

pytestmark = pytest.mark.anyio
_prefixes = itertools.count(1)


@pytest.fixture
def blobs(seaweed: _seaweed.SeaweedServer) -> S3Blobs:
    """Blobs below a prefix of the test's own in the server's bucket."""
    return S3Blobs(seaweed.url(f"t{next(_prefixes)}/blobs"), env=seaweed.env, timeout=5)


def blob(n: int, size: int = 2000) -> tuple[bytes, bytes]:
    """(digest, data) of a distinct blob."""
    data = hashlib.sha512(n.to_bytes(8, "little")).digest() * (size // 64)
    return hashlib.sha256(data).digest(), data


def raw_store(seaweed: _seaweed.SeaweedServer):  # type: ignore[no-untyped-def]
    """An obstore client of the whole bucket, to look at and tamper with objects directly."""
    from obstore.store import S3Store

    return S3Store(
        seaweed.bucket,
        endpoint=seaweed.endpoint,
        access_key_id=seaweed.env["AWS_ACCESS_KEY_ID"],
        secret_access_key=seaweed.env["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        client_options={"allow_http": True},
    )


def test_put_then_get_returns_the_bytes_under_prefix_hex2_hex(
    blobs: S3Blobs, seaweed: _seaweed.SeaweedServer
) -> None:
    import obstore

    digest, data = blob(1)
    blobs.put(digest, data)
    assert blobs.get(digest) == data
    key = f"{blobs.prefix}/{digest.hex()[:2]}/{digest.hex()}"
    assert blob_key(digest) == f"{digest.hex()[:2]}/{digest.hex()}"
    assert bytes(obstore.get(raw_store(seaweed), key).bytes()) == data


async def test_async_put_then_get_returns_the_bytes(blobs: S3Blobs) -> None:
    digest, data = blob(2)
    await blobs.put_async(digest, data)
    assert await blobs.get_async(digest) == data
    assert blobs.get(digest) == data


def test_putting_the_same_blob_twice_keeps_one_object(blobs: S3Blobs) -> None:
    digest, data = blob(3)
    blobs.put(digest, data)
    blobs.put(digest, data)
    assert [found for found, _ in blobs.list_older(0)] == [digest]
    assert blobs.get(digest) == data


def test_a_bad_digest_is_refused_before_any_request() -> None:
    # Nothing listens on port 9: a request would fail as unreachable, not as a bad digest.
    offline = S3Blobs("s3://bucket", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    digest, data = blob(4)
    with pytest.raises(BlobDigestError, match="32 bytes"):
        offline.put(digest[:16], data)
    with pytest.raises(BlobDigestError, match="32 bytes"):
        offline.get(b"x" * 31)
    with pytest.raises(BlobDigestError, match="32 bytes"):
        asyncio.run(offline.get_many([digest, "ab" * 32]))  # type: ignore[list-item]
    with pytest.raises(BlobDigestError, match=f"{digest.hex()}: its {len(data) + 1} bytes hash to"):
        offline.put(digest, data + b"!")
    with pytest.raises(BlobDigestError, match="32 bytes"):
        offline.delete([digest, b""])


def test_get_of_a_missing_blob_names_it_and_says_missing(blobs: S3Blobs) -> None:
    digest, _ = blob(5)
    with pytest.raises(BlobError) as caught:
        blobs.get(digest)
    error = caught.value
    assert isinstance(error, StoreError)
    assert (error.reason, error.digest, error.url) == ("missing", digest.hex(), blobs.url)
    assert f"blob {digest.hex()} is missing from {blobs.url}" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no obstore type leaks


def test_get_of_an_object_whose_bytes_do_not_match_its_key_says_corrupt(
    blobs: S3Blobs, seaweed: _seaweed.SeaweedServer
) -> None:
    import obstore

    digest, data = blob(6)
    obstore.put(raw_store(seaweed), f"{blobs.prefix}/{blob_key(digest)}", data[:-1] + b"?")
    with pytest.raises(BlobError, match=f"blob {digest.hex()} .* is corrupt") as caught:
        blobs.get(digest)
    assert caught.value.reason == "corrupt"
    with pytest.raises(BlobError, match="corrupt"):
        asyncio.run(blobs.get_many([digest]))


async def test_get_many_fetches_200_blobs_concurrently_as_put(blobs: S3Blobs) -> None:
    made = dict(blob(n, size=20_000) for n in range(100, 300))
    await asyncio.gather(*(blobs.put_async(d, data) for d, data in made.items()))
    first = next(iter(made))
    got = await blobs.get_many([*made, first])  # a repeated digest is fetched once
    assert got == made
    assert await blobs.get_many([]) == {}


async def test_get_many_with_one_missing_blob_names_it(blobs: S3Blobs) -> None:
    present, data = blob(7)
    absent, _ = blob(8)
    await blobs.put_async(present, data)
    with pytest.raises(BlobError, match=f"blob {absent.hex()} is missing") as caught:
        await blobs.get_many([present, absent])
    assert caught.value.digest == absent.hex()


async def test_delete_removes_blobs_and_ignores_absent_ones(blobs: S3Blobs) -> None:
    kept, gone, gone_async, never = blob(9), blob(10), blob(11), blob(12)
    for digest, data in (kept, gone, gone_async):
        blobs.put(digest, data)
    blobs.delete([gone[0], never[0]])
    await blobs.delete_async([gone_async[0]])
    blobs.delete([])
    for digest in (gone[0], gone_async[0]):
        with pytest.raises(BlobError, match="missing"):
            blobs.get(digest)
    assert blobs.get(kept[0]) == kept[1]
    assert [d for d, _ in blobs.list_older(0)] == [kept[0]]


async def test_list_older_spares_blobs_inside_the_grace_period(
    blobs: S3Blobs, seaweed: _seaweed.SeaweedServer
) -> None:
    import obstore

    made = dict(blob(n) for n in range(20, 25))
    for digest, data in made.items():
        blobs.put(digest, data)
    # Objects under the prefix that are not blob keys are never listed (nor deleted by a gc).
    obstore.put(raw_store(seaweed), f"{blobs.prefix}/README", b"not a blob")
    obstore.put(raw_store(seaweed), f"{blobs.prefix}/00/{'1' * 64}", b"key of wrong folder")

    assert list(blobs.list_older(3600)) == []
    listed = dict(blobs.list_older(0))
    assert set(listed) == set(made)
    assert all(modified.tzinfo is not None for modified in listed.values())
    assert [found async for found in blobs.list_older_async(3600)] == []
    assert {d async for d, _ in blobs.list_older_async(0)} == set(made)


async def test_check_passes_when_the_bucket_answers(blobs: S3Blobs) -> None:
    await blobs.check()


async def test_wrong_credentials_are_a_refused_blob_error(
    seaweed: _seaweed.SeaweedServer,
) -> None:
    env = {**seaweed.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    wrong = S3Blobs(seaweed.url("refused"), env=env)
    digest, data = blob(30)
    with pytest.raises(BlobError, match="refused the credentials") as caught:
        wrong.put(digest, data)
    assert (caught.value.reason, caught.value.digest) == ("refused", digest.hex())
    with pytest.raises(BlobError, match="refused the credentials"):
        await wrong.check()


async def test_a_killed_store_is_an_unreachable_error_and_blobs_survive_its_restart() -> None:
    _seaweed.require()
    server = _seaweed.SeaweedServer().start()
    try:
        blobs = S3Blobs(server.url("faults"), env=server.env, timeout=2, connect_timeout=1)
        digest, data = blob(40)
        blobs.put(digest, data)
        server.kill()
        with pytest.raises(BlobError, match="cannot be reached") as caught:
            await blobs.check()
        assert caught.value.reason == "unreachable" and server.endpoint in str(caught.value)
        other, other_data = blob(41)
        with pytest.raises(BlobError, match=f"storing blob {other.hex()}: .* cannot be reached"):
            blobs.put(other, other_data)
        with pytest.raises(BlobError, match="cannot be reached"):
            await blobs.get_many([digest])
        server.restart()
        assert blobs.get(digest) == data
        await blobs.check()
    finally:
        server.stop()
    assert not server.root.exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://bucket/prefix", "only s3:// URLs"),
        ("bucket/prefix", "only s3:// URLs"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bad_Bucket", "not a valid S3 bucket name"),
        ("s3://ab", "not a valid S3 bucket name"),
        ("s3://a..b", "not a valid S3 bucket name"),
        ("s3://key:secret@bucket", "credentials come from AWS_ACCESS_KEY_ID"),
        ("s3://bucket:9000/x", "the endpoint from AWS_ENDPOINT_URL"),
        ("s3://bucket/a//b", "prefix segment ''"),
        ("s3://bucket/a/../b", "prefix segment '..'"),
        ("s3://bucket/a b", "prefix segment 'a b'"),
        ("s3://bucket/x?versionId=1", "query or fragment"),
    ],
)
def test_bad_blobs_urls_are_refused_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BlobsUrlError) as caught:
        parse_blobs_url(url)
    assert says in str(caught.value) and repr(url) in str(caught.value)
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, ValueError)
    with pytest.raises(BlobsUrlError):
        S3Blobs(url, env={})


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/rngvault/blobs/", ("my.bucket-1", "rngvault/blobs")),
        ("s3://bkt/team=a/v1.2", ("bkt", "team=a/v1.2")),
    ],
)
def test_good_blobs_urls_give_bucket_and_prefix(url: str, parsed: tuple[str, str]) -> None:
    assert parse_blobs_url(url) == parsed


def test_without_obstore_the_module_imports_and_building_s3blobs_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "obstore" or m.startswith("obstore.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "obstore", None)
    monkeypatch.delitem(sys.modules, "rngvault.server.storage.blobs")
    module = importlib.import_module("rngvault.server.storage.blobs")
    assert module.parse_blobs_url("s3://bucket/p") == ("bucket", "p")
    with pytest.raises(MissingExtraError, match=r"pip install 'rngvault\[s3\]'"):
        module.S3Blobs("s3://bucket/p", env={})


def test_after_one_unreachable_request_the_next_fail_at_once_naming_why() -> None:
    """A store that accepts connections and never answers: the first request waits out its
    timeout; the ones right after it fail without a request, saying so."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are accepted by the kernel, never answered
        port = silent.getsockname()[1]
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
        }
        blobs = S3Blobs("s3://silent/x", env=env, timeout=0.5, connect_timeout=0.5, retries=0)
        data = b"x" * 100
        digest = hashlib.sha256(data).digest()
        with pytest.raises(BlobError) as first:
            blobs.put(digest, data)
        assert first.value.reason == "unreachable" and "did not answer a request" not in str(
            first.value
        )
        with pytest.raises(BlobError) as second:
            blobs.get(digest)
        assert second.value.reason == "unreachable"
        assert "did not answer a request less than 2 s ago" in str(second.value)
