"""The Store contract: every backend (the ``store`` fixture's params) must pass all of it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

import rngvault
from rngvault import ConflictError, NotFoundError
from rngvault.server.storage import open_store
from rngvault.server.storage.base import InvalidCursorError, SnapshotKey, Store

pytestmark = pytest.mark.anyio

Body = Callable[..., bytes]


def key(name: str = "epoch1", run: str = "resnet", namespace: str = "alice", rank: int = 0):
    return SnapshotKey(namespace, run, name, rank)


async def put(store: Store, k: SnapshotKey, body: bytes):
    return await store.put(k, body, rngvault.decode(body))


async def test_put_then_get_returns_the_exact_bytes(store: Store, make_body: Body) -> None:
    body = make_body(1)
    stored = await put(store, key(), body)
    assert stored.created
    assert stored.size == len(body)
    assert stored.digest == rngvault.decode(body).digest
    assert await store.get(key()) == body


async def test_same_bytes_again_is_not_created_and_other_bytes_conflict(
    store: Store, make_body: Body
) -> None:
    await put(store, key(), make_body(1))
    again = await put(store, key(), make_body(1))
    assert not again.created
    with pytest.raises(ConflictError, match="already stored with other content"):
        await put(store, key(), make_body(2))
    assert await store.get(key()) == make_body(1)


def rerun(body: bytes, **metadata: object) -> bytes:
    """The snapshot of ``body`` taken again later on another machine (other ``created`` and
    environment), with ``metadata`` changed."""
    first = rngvault.decode(body)
    again = dataclasses.replace(
        first,
        created=first.created + 3600,
        environment={**first.environment, "hostname": "another-machine"},
        metadata=dataclasses.replace(first.metadata, **metadata),
    )
    return rngvault.encode(again)


async def test_a_rerun_with_the_same_states_and_metadata_is_the_same_snapshot(
    store: Store, make_body: Body
) -> None:
    """Same states, step, epoch, tags, metrics, rank and world size: stored, not created,
    and the first bytes kept, whatever ``created`` and the environment say."""
    first = rerun(make_body(1, world_size=2), tags=("baseline", "fp32"))
    assert (await put(store, key(), first)).created
    again = rerun(first)
    assert again != first
    stored = await put(store, key(), again)
    assert (stored.created, stored.digest, stored.size) == (
        False,
        rngvault.decode(first).digest,
        len(first),
    )
    assert await store.get(key()) == first
    page = await store.list_snapshots("alice", "resnet")
    assert [(s.name, s.ranks) for s in page.items] == [("epoch1", (0,))]


async def test_concurrent_reruns_of_one_snapshot_store_it_once_without_a_conflict(
    store: Store, make_body: Body
) -> None:
    """Eight puts at once of one snapshot taken at eight moments: one stored, seven answered
    "already stored", none a conflict."""
    snapshot = rngvault.decode(make_body(1))
    bodies = [
        rngvault.encode(dataclasses.replace(snapshot, created=snapshot.created + i))
        for i in range(8)
    ]
    outcomes = await asyncio.gather(*(put(store, key(), body) for body in bodies))
    assert sorted(o.created for o in outcomes) == [False] * 7 + [True]
    assert await store.get(key()) in bodies


@pytest.mark.parametrize(
    "change",
    [
        {"step": 99},
        {"epoch": 3},
        {"tags": ("other",)},
        {"metrics": {"loss": 0.5}},
        {"metrics": {"loss": 1}},  # 1 is not 1.0: types count
        {"world_size": 4},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_a_rerun_with_other_user_metadata_conflicts(
    store: Store, make_body: Body, change: dict[str, object]
) -> None:
    first = make_body(0)  # metrics {"loss": 1.0}
    assert (await put(store, key(), first)).created
    with pytest.raises(ConflictError, match="already stored with other content .other metadata."):
        await put(store, key(), rerun(first, **change))
    with pytest.raises(ConflictError, match="already stored with other content .other states."):
        await put(store, key(), make_body(2))
    assert await store.get(key()) == first


async def test_ranks_are_separate_entries_of_one_snapshot(store: Store, make_body: Body) -> None:
    rank0 = make_body(1, rank=0, world_size=2)
    rank1 = make_body(2, rank=1, world_size=2)
    assert (await put(store, key(rank=0), rank0)).created
    assert (await put(store, key(rank=1), rank1)).created
    assert await store.get(key(rank=0)) == rank0
    assert await store.get(key(rank=1)) == rank1
    page = await store.list_snapshots("alice", "resnet")
    assert [(s.name, s.ranks) for s in page.items] == [("epoch1", (0, 1))]


async def test_the_ranks_stored_under_a_name_are_listed(store: Store, make_body: Body) -> None:
    """ranks() names the ranks a snapshot has, gaps shown; a missing one is not found."""
    await put(store, key(rank=0), make_body(1, rank=0, world_size=4))
    await put(store, key(rank=2), make_body(2, rank=2, world_size=4))
    assert await store.ranks("alice", "resnet", "epoch1") == (0, 2)
    with pytest.raises(NotFoundError, match="no snapshot 'other'"):
        await store.ranks("alice", "resnet", "other")
    with pytest.raises(NotFoundError, match="no run alice/nope"):
        await store.ranks("alice", "nope", "epoch1")


async def test_missing_run_snapshot_and_rank_are_not_found(store: Store, make_body: Body) -> None:
    with pytest.raises(NotFoundError, match="no run alice/resnet"):
        await store.get(key())
    await put(store, key(), make_body(1))
    with pytest.raises(NotFoundError, match="no snapshot 'other'"):
        await store.get(key("other"))
    with pytest.raises(NotFoundError, match="no rank 3"):
        await store.get(key(rank=3))
    with pytest.raises(NotFoundError):
        await store.list_snapshots("alice", "nope")


async def test_identical_states_across_runs_do_not_break_exactness(
    store: Store, make_body: Body
) -> None:
    bodies = {key(f"s{i}", run=f"run{i % 3}"): make_body(i, shared=7) for i in range(12)}
    for k, body in bodies.items():
        await put(store, k, body)
    for k, body in bodies.items():
        assert await store.get(k) == body


async def test_a_noncanonical_body_never_reaches_a_store(
    store: Store, make_body: Body, noncanonical: Callable[[bytes], bytes]
) -> None:
    """decode refuses states that are not canonical, so every stored body's states cut into
    blobs that other snapshots of the same states share."""
    body = noncanonical(make_body(3))
    assert body != make_body(3)
    with pytest.raises(rngvault.DecodeError, match="sorted order"):
        await put(store, key(), body)
    assert not (await store.list_runs(limit=5)).items


async def test_runs_page_by_cursor_and_filter_by_namespace_and_pattern(
    store: Store, make_body: Body
) -> None:
    for namespace in ("alice", "bob", "team-a", "team-b"):
        for run in ("r1", "r2", "r3"):
            await put(store, key(run=run, namespace=namespace), make_body(1))
    seen, cursor, pages = [], None, 0
    while pages < 20:
        page = await store.list_runs(cursor=cursor, limit=5)
        seen += [(r.namespace, r.run) for r in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(seen) and len(seen) == 12
    only_bob = await store.list_runs(namespace="bob")
    assert [r.run for r in only_bob.items] == ["r1", "r2", "r3"]
    teams = await store.list_runs(pattern="team-*")
    assert {r.namespace for r in teams.items} == {"team-a", "team-b"}
    assert teams.items[0].snapshots == 1


async def test_runs_filter_by_several_patterns_any_of_which_matches(
    store: Store, make_body: Body
) -> None:
    for namespace in ("alice", "bob", "team-a", "team-b", "carol"):
        for run in ("r1", "r2"):
            await put(store, key(run=run, namespace=namespace), make_body(1))
    some = await store.list_runs(pattern=("bob", "team-*", "bo?"), limit=3)
    assert [(r.namespace, r.run) for r in some.items] == [
        ("bob", "r1"),
        ("bob", "r2"),
        ("team-a", "r1"),
    ]
    assert some.next_cursor is not None
    rest = await store.list_runs(pattern=("bob", "team-*", "bo?"), cursor=some.next_cursor)
    assert [(r.namespace, r.run) for r in rest.items] == [
        ("team-a", "r2"),
        ("team-b", "r1"),
        ("team-b", "r2"),
    ]
    assert rest.next_cursor is None
    narrowed = await store.list_runs(pattern=("alice", "team-*"), namespace="team-b")
    assert {r.namespace for r in narrowed.items} == {"team-b"}
    assert (await store.list_runs(pattern=())).items == ()
    literal = await store.list_runs(pattern=("team_a", "%"))  # no SQL wildcards but * and ?
    assert literal.items == ()


async def test_snapshots_page_in_the_order_they_were_stored_with_metadata(
    store: Store, make_body: Body
) -> None:
    names = [f"step{n}" for n in (5, 1, 30, 2, 4, 10, 7)]
    for i, name in enumerate(names):
        await put(store, key(name), make_body(i, shared=1))
    listed, cursor = [], None
    for _ in range(10):
        page = await store.list_snapshots("alice", "resnet", cursor=cursor, limit=3)
        listed += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [s.name for s in listed] == names
    first = listed[0]
    snap = rngvault.decode(make_body(0, shared=1))
    assert first.digest == snap.digest and first.size == len(make_body(0, shared=1))
    assert first.step == 0 and first.epoch is None and first.metrics == {"loss": 1.0}
    assert first.generators == tuple((n, s.family) for n, s in snap.states.items())
    assert first.created == snap.created and first.stored > 0
    assert (first.tags, first.world_size) == ((), 1)


async def test_listed_snapshots_carry_tags_and_world_size(store: Store, make_body: Body) -> None:
    """Of the lowest rank stored, as every other listed field."""
    body = rerun(make_body(1, rank=1, world_size=4), tags=("baseline", "fp32"))
    await put(store, key(rank=1), body)
    [listed] = (await store.list_snapshots("alice", "resnet")).items
    assert (listed.tags, listed.world_size, listed.ranks) == (("baseline", "fp32"), 4, (1,))


def test_rows_stored_without_tags_and_world_size_list_them_as_none_and_1() -> None:
    from rngvault.server.storage.content import snapshot_info

    old = '{"created":1.0,"step":1,"epoch":null,"metrics":{},"generators":[["g","random"]]}'
    info = snapshot_info("s", 2.0, [0], "d" * 64, 10, old)
    assert (info.tags, info.world_size, info.generators) == ((), 1, (("g", "random"),))


async def test_delete_snapshot_keeps_states_other_snapshots_still_use(
    store: Store, make_body: Body
) -> None:
    await put(store, key("a"), make_body(1, shared=5))
    await put(store, key("b"), make_body(2, shared=5))
    assert await store.delete_snapshot("alice", "resnet", "a") == 1
    with pytest.raises(NotFoundError):
        await store.get(key("a"))
    assert await store.get(key("b")) == make_body(2, shared=5)
    assert await store.count_snapshots() == 1
    with pytest.raises(NotFoundError):
        await store.delete_snapshot("alice", "resnet", "a")


async def test_deleting_the_last_snapshot_or_the_run_removes_the_run(
    store: Store, make_body: Body
) -> None:
    await put(store, key("a", run="one"), make_body(1))
    await store.delete_snapshot("alice", "one", "a")
    for i in range(3):
        await put(store, key(f"s{i}", run="two"), make_body(i))
    assert await store.delete_run("alice", "two") == 3
    assert (await store.list_runs()).items == ()
    assert await store.count_snapshots() == 0
    with pytest.raises(NotFoundError):
        await store.delete_run("alice", "two")
    await put(store, key("s0", run="two"), make_body(9))  # the name is free again
    assert await store.get(key("s0", run="two")) == make_body(9)


async def test_a_forged_cursor_is_rejected(store: Store, make_body: Body) -> None:
    await put(store, key(), make_body(1))
    # not base64 JSON; no parts; too few; an int no query can take; text that is not UTF-8
    for bad in (
        "nonsense",
        "W10",
        "WyJhIl0",
        "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5XQ",
        "WyJcdWQ4MDAiLCJ4Il0",
    ):
        with pytest.raises(InvalidCursorError):
            await store.list_runs(cursor=bad)
        with pytest.raises(InvalidCursorError):
            await store.list_snapshots("alice", "resnet", cursor=bad)


async def test_concurrent_puts_are_all_stored(store: Store, make_body: Body) -> None:
    bodies = {key(f"s{i}", run=f"r{i % 4}"): make_body(i) for i in range(200)}
    results = await asyncio.gather(*(put(store, k, b) for k, b in bodies.items()))
    assert all(r.created for r in results)
    assert await store.count_snapshots() == 200
    for k, body in list(bodies.items())[::17]:
        assert await store.get(k) == body


async def test_snapshots_survive_closing_and_reopening(store_url: str, make_body: Body) -> None:
    first = await open_store(store_url)
    await put(first, key(), make_body(1))
    await first.close()
    second = await open_store(store_url)
    try:
        assert await second.get(key()) == make_body(1)
        await second.check()
    finally:
        await second.close()


async def _names(store: Store, namespace: str, run: str) -> list[str]:
    try:
        page = await store.list_snapshots(namespace, run, limit=1000)
    except NotFoundError:
        return []
    return [s.name for s in page.items]


async def _stored_at(store: Store, namespace: str, run: str) -> dict[str, float]:
    page = await store.list_snapshots(namespace, run, limit=1000)
    return {s.name: s.stored for s in page.items}


async def test_collect_keeps_the_last_n_of_each_matching_run(store: Store, make_body: Body) -> None:
    for run in ("resnet-a", "resnet-b", "vit"):
        for i in range(5):
            await put(store, key(f"s{i}", run=run), make_body(i, shared=9))
    collected = await store.collect("alice/resnet-*", keep_last=2)
    assert (collected.runs, collected.snapshots, collected.ranks) == (2, 6, 6)
    assert not collected.dry_run
    assert await _names(store, "alice", "resnet-a") == ["s3", "s4"]
    assert await _names(store, "alice", "resnet-b") == ["s3", "s4"]
    assert await _names(store, "alice", "vit") == [f"s{i}" for i in range(5)]
    assert sorted(collected.sample) == sorted(
        ("alice", run, f"s{i}") for run in ("resnet-a", "resnet-b") for i in range(3)
    )
    assert await store.count_snapshots() == 9
    again = await store.collect("alice/resnet-*", keep_last=2)
    assert (again.runs, again.snapshots, again.blobs) == (2, 0, 0)


async def test_collect_by_age_and_by_both_rules(store: Store, make_body: Body) -> None:
    """stored_before alone deletes what is older; with keep_last only what both select."""
    for i in range(6):
        await put(store, key(f"s{i}"), make_body(i))
        await asyncio.sleep(0.01)
    stored = await _stored_at(store, "alice", "resnet")
    cut = (stored["s3"] + stored["s4"]) / 2  # s0..s3 are older
    both = await store.collect("alice/resnet", keep_last=5, stored_before=cut)
    assert both.snapshots == 1 and both.sample == (("alice", "resnet", "s0"),)
    assert await _names(store, "alice", "resnet") == [f"s{i}" for i in range(1, 6)]
    by_age = await store.collect("alice/*", stored_before=cut)
    assert by_age.snapshots == 3
    assert await _names(store, "alice", "resnet") == ["s4", "s5"]
    nothing = await store.collect("*", stored_before=stored["s0"])
    assert (nothing.runs, nothing.snapshots) == (1, 0)


async def test_a_dry_run_counts_and_deletes_nothing(store: Store, make_body: Body) -> None:
    for i in range(4):
        await put(store, key(f"s{i}", rank=0), make_body(i, rank=0, world_size=2))
        await put(store, key(f"s{i}", rank=1), make_body(i + 10, rank=1, world_size=2))
    dry = await store.collect("alice/resnet", keep_last=1, dry_run=True)
    assert dry.dry_run and (dry.runs, dry.snapshots, dry.ranks, dry.blobs) == (1, 3, 6, 0)
    assert [s[2] for s in dry.sample] == ["s0", "s1", "s2"]
    assert await _names(store, "alice", "resnet") == ["s0", "s1", "s2", "s3"]
    done = await store.collect("alice/resnet", keep_last=1)
    assert (done.snapshots, done.ranks, done.sample) == (3, 6, dry.sample)
    assert done.blobs > 0


async def test_collect_only_touches_the_namespaces_it_is_given(
    store: Store, make_body: Body
) -> None:
    for namespace in ("alice", "bob"):
        for i in range(3):
            await put(store, key(f"s{i}", run="r", namespace=namespace), make_body(i))
    limited = await store.collect("*", keep_last=1, namespaces="bob")
    assert (limited.runs, limited.snapshots) == (1, 2)
    assert await _names(store, "alice", "r") == ["s0", "s1", "s2"]
    assert await _names(store, "bob", "r") == ["s2"]
    none = await store.collect("alice/*", keep_last=1, namespaces="b*")
    assert (none.runs, none.snapshots) == (0, 0)


async def test_collect_takes_several_namespace_patterns(store: Store, make_body: Body) -> None:
    for namespace in ("alice", "bob", "carol"):
        for i in range(3):
            await put(store, key(f"s{i}", run="r", namespace=namespace), make_body(i))
    assert (await store.collect("*", keep_last=1, namespaces=())).runs == 0
    both = await store.collect("*", keep_last=1, namespaces=("bob", "c*"))
    assert (both.runs, both.snapshots) == (2, 4)
    assert await _names(store, "alice", "r") == ["s0", "s1", "s2"]
    assert await _names(store, "bob", "r") == await _names(store, "carol", "r") == ["s2"]


async def test_collect_removes_runs_it_empties(store: Store, make_body: Body) -> None:
    for i in range(3):
        await put(store, key(f"s{i}", run="old"), make_body(i))
    await put(store, key("s0", run="kept"), make_body(7))
    collected = await store.collect("alice/*", keep_last=0)
    assert collected.snapshots == 4
    assert (await store.list_runs()).items == ()
    assert await store.count_snapshots() == 0
    with pytest.raises(NotFoundError):
        await store.list_snapshots("alice", "old")
    await put(store, key("s0", run="old"), make_body(9))  # the run can start again
    assert await store.get(key("s0", run="old")) == make_body(9)


async def test_collect_frees_blobs_only_when_no_kept_snapshot_shares_them(
    store: Store, make_body: Body
) -> None:
    """make_body(i, shared=s): one state of its own, two shared by every body of s."""
    for i in range(4):
        await put(store, key(f"s{i}"), make_body(i, shared=5))
    await put(store, key("other", run="elsewhere"), make_body(100, shared=6))
    collected = await store.collect("alice/resnet", keep_last=1)
    assert collected.snapshots == 3
    assert collected.blobs == 3  # the three own states; the shared two are still used
    assert await store.get(key("s3")) == make_body(3, shared=5)
    assert await store.get(key("other", run="elsewhere")) == make_body(100, shared=6)
    last = await store.collect("alice/resnet", keep_last=0)
    assert last.blobs == 3  # s3's own state and the two states of shared=5
    assert await store.get(key("other", run="elsewhere")) == make_body(100, shared=6)


async def test_deleting_and_collecting_many_snapshots_goes_in_batches_yet_is_complete(
    store: Store, make_body: Body
) -> None:
    """More snapshots than one batch: every one goes, and puts made meanwhile stay."""
    bodies = [make_body(i % 7, shared=i % 3) for i in range(620)]
    await asyncio.gather(*(put(store, key(f"s{i}", run="many"), b) for i, b in enumerate(bodies)))
    deleting = asyncio.ensure_future(store.delete_run("alice", "many"))
    meanwhile = [await put(store, key(f"m{i}", run="meanwhile"), make_body(i)) for i in range(5)]
    assert await deleting == 620
    assert all(m.created for m in meanwhile)
    assert await _names(store, "alice", "many") == []
    assert len(await _names(store, "alice", "meanwhile")) == 5
    assert await store.count_snapshots() == 5


async def test_vacuum_keeps_every_snapshot_readable(store: Store, make_body: Body) -> None:
    for i in range(30):
        await put(store, key(f"s{i}"), make_body(i, shared=i))
    await store.collect("alice/resnet", keep_last=3)
    returned = await store.vacuum()
    assert returned >= 0
    for i in range(27, 30):
        assert await store.get(key(f"s{i}")) == make_body(i, shared=i)
    assert await store.count_snapshots() == 3
