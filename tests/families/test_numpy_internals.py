"""rngvault/families/_numpy.py: NumPy's MT19937 and RandomState states read and written in
their C structs, proven against NumPy's own getters and setters, with the public path as
the fallback."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rngvault.families import _numpy, numpy_bitgen, numpy_legacy


@pytest.fixture
def unproven(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both fast paths forgotten, so the next use proves them again."""
    monkeypatch.setattr(_numpy, "_mt_ok", None)
    monkeypatch.setattr(_numpy, "_gauss_offset", None)
    yield


def refuse(*args: object) -> None:
    raise AssertionError("the struct must not be written")


@pytest.mark.parametrize("draws", [0, 1, 311, 623, 624, 625, 5000])
def test_mt19937_read_equals_numpys_state_at_every_position(draws: int) -> None:
    """Key and pos read from the struct equal ``.state`` (pos 0 to 624), as a fresh array."""
    bit_generator = np.random.MT19937(7)
    bit_generator.random_raw(draws)
    key, pos = _numpy.read_mt(bit_generator)
    assert _numpy.mt_fast() is True
    expected = bit_generator.state["state"]
    assert pos == expected["pos"]
    assert key.dtype == np.uint32 and key.flags.writeable
    assert np.array_equal(key, expected["key"])


def test_mt19937_falls_back_to_state_where_the_struct_reads_otherwise(
    unproven: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the struct ever reads differently from ``.state``, nothing is read or written
    there: capture and restore go through ``.state`` and stay exact."""
    monkeypatch.setattr(_numpy.ctypes, "string_at", lambda address, size: bytes(size))
    monkeypatch.setattr(_numpy.ctypes, "memmove", refuse)
    source = np.random.MT19937(8)
    source.random_raw(10)
    fields = numpy_bitgen.capture(source)
    assert _numpy.mt_fast() is False
    assert np.array_equal(fields["state"]["key"], source.state["state"]["key"])
    expected = source.random_raw(1000)
    target = np.random.MT19937(8)
    numpy_bitgen.restore(target, fields)
    assert np.array_equal(target.random_raw(1000), expected)


@pytest.mark.parametrize("normals", [0, 1, 2, 3])
@pytest.mark.parametrize("draws", [0, 623, 624, 625])
def test_randomstate_read_and_write_match_numpys_get_and_set_state(
    draws: int, normals: int
) -> None:
    """Key, pos and the cached normal (present after an odd number of normals) read as
    ``get_state`` says, and written ones are what ``get_state`` then reports and draws."""
    rs = np.random.RandomState(11)
    rs.random_sample(draws)
    rs.standard_normal(normals)
    key, pos, has_gauss, gauss = _numpy.read_legacy(rs)
    assert _numpy.gauss_offset() > 0
    state = rs.get_state(legacy=False)
    assert (pos, has_gauss, gauss) == (state["state"]["pos"], state["has_gauss"], state["gauss"])
    assert np.array_equal(key, state["state"]["key"])
    expected = (rs.standard_normal(3).tolist(), rs.random_sample(700).tolist())
    target = np.random.RandomState(12)
    target.standard_normal()
    _numpy.write_legacy(target, key, pos, has_gauss, gauss)
    written = target.get_state(legacy=False)
    assert (written["state"]["pos"], written["has_gauss"], written["gauss"]) == (
        pos,
        has_gauss,
        gauss,
    )
    assert (target.standard_normal(3).tolist(), target.random_sample(700).tolist()) == expected


def test_randomstate_falls_back_to_get_and_set_state_where_no_layout_is_found(
    unproven: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cached normal cannot be located in the object, RandomStates are captured
    and restored through get_state/set_state only, and stay exact."""
    monkeypatch.setattr(_numpy, "_find_gauss", lambda: -1)
    rs = np.random.RandomState(5)
    rs.standard_normal()
    fields = numpy_legacy.capture(rs)
    assert _numpy.gauss_offset() == -1 and fields["has_gauss"] == 1
    expected = rs.standard_normal(5).tolist()
    monkeypatch.setattr(_numpy.ctypes, "memmove", refuse)
    target = np.random.RandomState(6)
    numpy_legacy.restore(target, fields)
    assert target.standard_normal(5).tolist() == expected


def test_the_cached_normal_is_not_located_where_the_object_reads_otherwise(
    unproven: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search for the cached normal finds nothing in memory that does not hold it, and
    then writes nothing."""
    assert _numpy.mt_fast() is True
    monkeypatch.setattr(_numpy.ctypes, "string_at", lambda address, size: bytes(size))
    monkeypatch.setattr(_numpy.ctypes, "memmove", refuse)
    assert _numpy._find_gauss() == -1


def test_a_struct_write_copies_exactly_the_structs_bytes_or_nothing() -> None:
    """A key of another length (an array changed in place after it was checked) or a pos
    outside 0..624 is refused before anything is written into NumPy's struct."""
    assert _numpy.mt_fast() is True
    bit_generator = np.random.MT19937(3)
    before = bit_generator.state["state"]
    for key, pos in [(np.ones(312, np.uint32), 5), (np.ones(624, np.uint32), 700)]:
        with pytest.raises(ValueError, match="624 words and pos 0..624"):
            _numpy.write_mt(bit_generator, key, pos)
    after = bit_generator.state["state"]
    assert after["pos"] == before["pos"] and np.array_equal(after["key"], before["key"])
