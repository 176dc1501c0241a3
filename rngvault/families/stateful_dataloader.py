"""torchdata's ``StatefulDataLoader``: the loader's own ``state_dict()``, pickle-free.

A ``StatefulDataLoader`` knows its position in an epoch: its ``state_dict()`` holds the
sampler's generator as the epoch started, the samples and batches yielded, the workers'
base seed and each worker's dataset state; ``load_state_dict()`` makes the next ``iter()``
resume after the last batch yielded. rngvault captures that state and gives it back.

The state is a tree of dicts, lists and tensors as deep as torchdata nests it (deeper than
a snapshot's maps may nest), so it is stored flat: ``entries``, one ``(path, kind, value)``
per node in depth-first order (a container before its children, children in order), where
``path`` is the keys from the root. The kinds and the checks are in docs/format.md.

rngvault accepts these loaders only when the process has imported
``torchdata.stateful_dataloader``; it never imports torchdata itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from itertools import chain, compress, repeat
from operator import eq, itemgetter, lt
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import CaptureError, StateError, warn
from rngvault.families import Family, Fields, _torch
from rngvault.families import _fields as f
from rngvault.families.dataloader import LateRestoreWarning

NAME = "torchdata.stateful_dataloader"
MAX_ENTRIES = 128  # nodes of one state: a loader with 2 workers has 27, with 16 workers 83
MAX_TENSORS = 4
MAX_PATH = 16  # keys from the root to a node (torchdata's own nodes are at most 5 deep)
# key, str, bytes and tensor bytes of one state, together, an int key counting 8: with the
# few bytes each entry adds, a state at every limit fits decode's MAX_STATE_BYTES (32 KiB)
MAX_DATA_BYTES = 22 * 2**10
INT_KEY_BYTES = 8
MAX_NDIM = 8
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

CONTAINERS = frozenset({"dict", "list", "tuple"})
# tensor dtypes, by name, and their item sizes
DTYPES = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
}
_LEAF_TYPES: dict[str, tuple[type, ...]] = {
    "none": (type(None),),
    "bool": (bool,),
    "int": (int,),
    "float": (float,),
    "str": (str,),
    "bytes": (bytes,),
    "tensor": (tuple, list),
}
KINDS = CONTAINERS | _LEAF_TYPES.keys()
# Counters torchdata replays or compares on load: ints >= 0 wherever they are.
_COUNTERS = frozenset(
    {
        "_num_yielded",
        "_sampler_iter_yielded",
        "_snapshot_step",
        "_steps_since_snapshot",
        "samples_yielded",
        "yielded",
    }
)
_SNAPSHOT = "_snapshot"
_MAIN = (_SNAPSHOT, "_main_snapshot")
_WORKERS = (_SNAPSHOT, "_worker_snapshots")
_NUM_WORKERS = (*_MAIN, "_num_workers")
_SAMPLER_GENERATOR = ("sampler_iter_state", "generator")  # the end of its path
# Where torchdata's RandomSampler keeps the generator state it sets on load: one process,
# and the main process of a multi-worker loader.
_GENERATOR_PATHS = (
    ("_sampler_iter_state", *_SAMPLER_GENERATOR),
    (*_MAIN, "_sampler_iter_state", *_SAMPLER_GENERATOR),
)
BATCHES = "batches"
MAX_WORKERS = 1024
MAX_PER_SNAPSHOT = 64  # states of this family in one snapshot (Family.max_states)


def _module() -> Any:
    return sys.modules.get("torchdata.stateful_dataloader")


def accepts(obj: Any) -> bool:
    module = _module()
    return module is not None and isinstance(obj, module.StatefulDataLoader)


# -- capture: the state_dict as entries --------------------------------------------------------


def _show_path(path: tuple[Any, ...]) -> str:
    return "/".join(map(str, path)) or "(root)"


_TORCH_DTYPES: dict[Any, str] = {}


def _tensor(value: Any, path: tuple[Any, ...]) -> tuple[str, tuple[int, ...], bytes]:
    torch: Any = _torch.loaded()
    if not _TORCH_DTYPES:
        _TORCH_DTYPES.update({getattr(torch, name): name for name in DTYPES})
    name = _TORCH_DTYPES.get(value.dtype)
    if name is None or value.device.type != "cpu" or value.layout != torch.strided:
        raise CaptureError(
            f"the StatefulDataLoader state holds a {value.dtype} tensor on {value.device} at "
            f"{_show_path(path)}; rngvault stores dense CPU tensors of "
            f"{', '.join(DTYPES)} only"
        )
    flat = value.detach().contiguous().reshape(-1)
    return name, tuple(value.shape), flat.view(torch.uint8).numpy().tobytes()


def _flatten(value: Any, path: tuple[Any, ...], out: list[tuple[Any, ...]]) -> None:
    if len(out) >= MAX_ENTRIES:
        raise CaptureError(
            f"the StatefulDataLoader state has more than {MAX_ENTRIES} nodes; rngvault "
            "stores at most that many"
        )
    kind = type(value)
    if kind is dict or isinstance(value, Mapping):
        out.append((path, "dict", None))
        for key, item in value.items():
            if type(key) is not str and type(key) is not int:
                raise CaptureError(
                    f"the StatefulDataLoader state has a {type(key).__name__} key "
                    f"{f.show(key)} at {_show_path(path)}; rngvault stores str and int keys"
                )
            _flatten(item, (*path, key), out)
    elif kind is list or kind is tuple:
        out.append((path, kind.__name__, None))
        for index, item in enumerate(value):
            _flatten(item, (*path, index), out)
    elif value is None:
        out.append((path, "none", None))
    elif kind in (bool, int, float, str, bytes):
        out.append((path, kind.__name__, value))
    elif (torch := _torch.loaded()) is not None and isinstance(value, torch.Tensor):
        out.append((path, "tensor", _tensor(value, path)))
    else:
        raise CaptureError(
            f"the StatefulDataLoader state holds a {type(value).__module__}."
            f"{type(value).__qualname__} at {_show_path(path)}; rngvault stores dicts, "
            "lists, tuples, None, bool, int, float, str, bytes and CPU tensors"
        )


def _state_dict(loader: Any) -> Any:
    # A state given to load_state_dict and not yet used by an iter() is the loader's
    # position; asking torchdata would start an iterator (and its workers) to find it.
    if loader._iterator is None and loader.next_iter_state is not None:
        return loader.next_iter_state
    return loader.state_dict()


def capture(obj: Any) -> Fields:
    entries: list[tuple[Any, ...]] = []
    _flatten(_state_dict(obj), (), entries)
    fields = {"entries": tuple(entries)}
    try:
        validate(fields)
    except StateError as exc:
        raise CaptureError(f"the StatefulDataLoader state cannot be stored: {exc}") from None
    return fields


# -- validate ------------------------------------------------------------------------------------


def _entry_error(index: int, part: str, message: str, value: Any = None) -> StateError:
    return StateError(message, field=f"entries[{index}].{part}", value=value)


def _check_tensor(index: int, value: Any) -> int:
    """A tensor value ``(dtype, shape, data)``; returns the data's length."""
    if len(value) != 3:
        raise _entry_error(index, "value", f"a tensor is (dtype, shape, data), got {len(value)}")
    dtype, shape, data = value
    size = DTYPES.get(dtype) if type(dtype) is str else None
    if size is None:
        raise _entry_error(
            index, "value.dtype", f"{f.show(dtype)} is not one of {', '.join(DTYPES)}", dtype
        )
    if type(shape) not in (tuple, list) or len(shape) > MAX_NDIM:
        raise _entry_error(
            index, "value.shape", f"expected at most {MAX_NDIM} dimensions, got {f.show(shape)}"
        )
    for dim in shape:
        if type(dim) is not int or not 0 <= dim <= MAX_DATA_BYTES:
            raise _entry_error(
                index, "value.shape", f"dimension {f.show(dim)} is not an int 0..{MAX_DATA_BYTES}"
            )
        size *= dim
    if type(data) not in (bytes, bytearray) or len(data) != size:
        got = f"{len(data)} bytes" if type(data) in (bytes, bytearray) else type(data).__name__
        raise _entry_error(
            index,
            "value.data",
            f"a {dtype} tensor of shape {list(shape)} has {size} bytes of data, got {got}",
        )
    return size


Nodes = dict[tuple[Any, ...], tuple[int, str, Any]]
_SEQS = frozenset({tuple, list})
_KEY_TYPES = frozenset({str, int})
_NONE = type(None)
_KIND_TYPES = frozenset(
    {(kind, _NONE) for kind in (*CONTAINERS, "none")}
    | {(kind, t) for kind, types in _LEAF_TYPES.items() for t in types}
)
_SIZED = frozenset({"str", "bytes"})
_PARENT = itemgetter(slice(None, -1))
_LAST = itemgetter(-1)


def _fast_nodes(entries: tuple[Any, ...] | list[Any]) -> Nodes | None:
    """The nodes of well-formed entries, checked a column at a time by builtins (validating
    1024 states stays within decode's time bound); None when anything is off, for
    ``_check_entries`` to find and name. Accepts nothing ``_check_entries`` refuses."""
    n = len(entries)
    try:
        if not set(map(type, entries)) <= _SEQS:
            return None
        paths, kinds, values = zip(*entries, strict=True)  # a ragged entry: ValueError
        if set(map(type, kinds)) != {str}:
            return None
        if not set(zip(kinds, map(type, values), strict=True)) <= _KIND_TYPES:
            return None
        if not set(map(type, paths)) <= _SEQS:
            return None
        tpaths = list(map(tuple, paths))
        if max(map(len, tpaths)) > MAX_PATH or tpaths[0] != () or kinds[0] != "dict":
            return None
        where = dict(zip(tpaths, range(n), strict=True))
        if len(where) != n:
            return None
        found = list(map(where.get, map(_PARENT, tpaths[1:])))
        if None in found:
            return None
        parents: list[int] = found  # type: ignore[assignment]
        if not all(map(lt, parents, range(1, n))):
            return None
        parent_kinds = set(map(kinds.__getitem__, parents))
        if not parent_kinds <= CONTAINERS:
            return None
        # Every key is the last key of its own entry's path (the others are its parent's).
        lasts = list(map(_LAST, tpaths[1:]))
        key_types = set(map(type, lasts))
        if not key_types <= _KEY_TYPES:
            return None
        keys = list(chain.from_iterable(tpaths))
        if int in key_types:
            ints = [key for key in lasts if type(key) is int]
            if min(ints) < INT_MIN or max(ints) > INT_MAX:
                return None
            strs = [key for key in keys if type(key) is str]
            total = sum(map(len, strs)) + INT_KEY_BYTES * (len(keys) - len(strs))
        else:
            total = sum(map(len, keys))
        if parent_kinds != {"dict"}:
            counts: dict[int, int] = {}  # items of lists and tuples: keys 0, 1, ... in order
            for index, parent in enumerate(parents, 1):
                if kinds[parent] != "dict":
                    key = lasts[index - 1]
                    if type(key) is not int or key != counts.get(parent, 0):
                        return None
                    counts[parent] = key + 1
        if "int" in kinds:
            ints = list(compress(values, map(eq, kinds, repeat("int"))))
            if min(ints) < INT_MIN or max(ints) > INT_MAX:
                return None
        total += sum(map(len, compress(values, map(_SIZED.__contains__, kinds))))
        if "tensor" in kinds:
            tensors = list(compress(range(n), map(eq, kinds, repeat("tensor"))))
            if len(tensors) > MAX_TENSORS:
                return None
            total += sum(_check_tensor(index, values[index]) for index in tensors)
        if total > MAX_DATA_BYTES:
            return None
        if not _COUNTERS.isdisjoint(lasts):
            for index in compress(range(1, n), map(_COUNTERS.__contains__, lasts)):
                if kinds[index] != "int" or values[index] < 0:
                    return None
    except (TypeError, ValueError):  # an unhashable kind or key, a ragged entry
        return None
    return dict(zip(tpaths, zip(range(n), kinds, values, strict=True), strict=True))


def _check_entries(entries: tuple[Any, ...] | list[Any]) -> Nodes:
    """The same checks as ``_fast_nodes``, an entry at a time, naming the first failure."""
    nodes: Nodes = {}
    children: dict[tuple[Any, ...], int] = {}
    total = 0
    tensors = 0
    for index, entry in enumerate(entries):
        if type(entry) not in (tuple, list) or len(entry) != 3:
            raise StateError(
                f"an entry is (path, kind, value), got {f.show(entry)}", field=f"entries[{index}]"
            )
        path, kind, value = entry
        if type(path) not in (tuple, list) or len(path) > MAX_PATH:
            raise _entry_error(
                index, "path", f"expected at most {MAX_PATH} keys, got {f.show(path)}"
            )
        path = tuple(path)
        for key in path:
            if type(key) is str:
                total += len(key)
            elif type(key) is int and INT_MIN <= key <= INT_MAX:
                total += INT_KEY_BYTES
            else:
                raise _entry_error(index, "path", f"a key is {f.show(key)}, not a str or an int")
        if type(kind) is not str or kind not in KINDS:
            raise _entry_error(index, "kind", f"{f.show(kind)} is not one of {sorted(KINDS)}", kind)
        if kind in CONTAINERS or kind == "none":
            if value is not None:
                raise _entry_error(index, "value", f"a {kind} entry has nil, got {f.show(value)}")
        elif type(value) not in _LEAF_TYPES[kind]:
            raise _entry_error(
                index, "value", f"a {kind} entry holds a {type(value).__name__}", f.show(value)
            )
        elif kind == "tensor":
            total += _check_tensor(index, value)
            tensors += 1
            if tensors > MAX_TENSORS:
                raise _entry_error(index, "kind", f"a state holds at most {MAX_TENSORS} tensors")
        elif kind == "str" or kind == "bytes":
            total += len(value)
        elif kind == "int" and not INT_MIN <= value <= INT_MAX:
            raise _entry_error(
                index, "value", f"{f.show(value)} is out of range {INT_MIN}..{INT_MAX}"
            )
        if total > MAX_DATA_BYTES:
            raise _entry_error(
                index, "value", f"the keys and data of the state pass {MAX_DATA_BYTES} bytes"
            )
        if not path:
            if index or kind != "dict":
                raise _entry_error(index, "path", "only the first entry is the root, a dict")
        else:
            if not index:
                raise _entry_error(index, "path", "the first entry must be the root (path [])")
            if path in nodes:
                raise _entry_error(index, "path", f"{_show_path(path)} appears twice")
            parent = nodes.get(path[:-1])
            if parent is None or parent[1] not in CONTAINERS:
                raise _entry_error(
                    index,
                    "path",
                    f"{_show_path(path)} is not inside a dict, list or tuple before it",
                )
            if parent[1] != "dict":
                count = children.get(path[:-1], 0)
                if path[-1] != count or type(path[-1]) is not int:
                    raise _entry_error(
                        index,
                        "path",
                        f"{_show_path(path)}: the next item of a {parent[1]} is {count}",
                    )
                children[path[:-1]] = count + 1
            if path[-1] in _COUNTERS and (kind != "int" or value < 0):
                raise _entry_error(index, "value", f"{_show_path(path)} must be an int >= 0", value)
        nodes[path] = (index, kind, value)
    return nodes


# What torchdata's load_state_dict, and the iterator it builds from the state, read: each
# key and the kinds of value it can use. A key missing or of another kind fails at the next
# iter() (a KeyError or a TypeError), after the loader's generator has been drawn from.
Spec = dict[str, frozenset[str]]
_DICT = frozenset({"dict"})
_DICT_OR_NONE = frozenset({"dict", "none"})
_INT = frozenset({"int"})
_INT_OR_NONE = frozenset({"int", "none"})
_BOOL = frozenset({"bool"})
_ANY = frozenset(KINDS)  # handed to the dataset's own load_state_dict, as it gave it
# the iterator's part: a one-process state's, and a multi-worker state's main snapshot's
_ITERATOR: Spec = {
    "_index_sampler_state": _DICT_OR_NONE,
    "_sampler_iter_state": _DICT_OR_NONE,
    "_sampler_iter_yielded": _INT,
    "_IterableDataset_len_called": _INT_OR_NONE,
    "_shared_seed": _INT_OR_NONE,
}
_ONE_PROCESS: Spec = {
    **_ITERATOR,
    "_num_yielded": _INT,
    "fetcher_state": _DICT_OR_NONE,
    "dataset_state": _ANY,
    "_iterator_finished": _BOOL,
}
_MULTI: Spec = {"_snapshot": _DICT, "_steps_since_snapshot": _INT, "_iterator_finished": _BOOL}
_SNAPSHOT_KEYS: Spec = {
    "_last_yielded_worker_id": _INT,
    "_main_snapshot": _DICT,
    "_snapshot_step": _INT,
    "_worker_snapshots": _DICT,
}
_MAIN_KEYS: Spec = {**_ITERATOR, "_num_workers": _INT, "_base_seed": _INT}
_WORKER: Spec = {"worker_id": _INT, "dataset_state": _ANY, "fetcher_state": _DICT_OR_NONE}
_FETCHER: Spec = {"dataset_iter_state": _ANY, "fetcher_ended": _BOOL}  # an iterable dataset's
# torchdata's batch sampler iterator; the sampler's and the sampler iterator's parts are
# there when they have a state, and torchdata's RandomSampler iterator's is the last
_BATCHES: Spec = {"samples_yielded": _INT}
_BATCHES_OPTIONAL: Spec = {"sampler_state": _DICT, "sampler_iter_state": _DICT}
_RANDOM_SAMPLER: Spec = {"generator": frozenset({"tensor"}), "yielded": _INT}


def _int_at(
    nodes: Mapping[tuple[Any, ...], tuple[int, str, Any]], path: tuple[str, ...], lo: int, hi: int
) -> int:
    node = nodes.get(path)
    if node is None:
        raise StateError(f"a multi-worker state has no {_show_path(path)}", field="entries")
    index, kind, value = node
    if kind != "int" or not lo <= value <= hi:
        raise _entry_error(index, "value", f"{_show_path(path)} must be an int {lo}..{hi}", value)
    return int(value)


def _check_workers(nodes: Nodes) -> None:
    """What torchdata relies on when it restarts workers from a multi-worker state."""
    workers = _int_at(nodes, _NUM_WORKERS, 1, MAX_WORKERS)
    # torchdata steps its round-robin over the workers that many times
    _int_at(nodes, (_SNAPSHOT, "_last_yielded_worker_id"), 0, workers - 1)
    _int_at(nodes, (_SNAPSHOT, "_snapshot_step"), 0, INT_MAX)
    _int_at(nodes, ("_steps_since_snapshot",), 0, INT_MAX)
    # each worker seeds torch with base seed + its id (torch draws it as an int64 >= 0)
    _int_at(nodes, (*_MAIN, "_base_seed"), 0, 2**63 - 1)
    node = nodes[_WORKERS]
    keys = [path[2] for path in nodes if len(path) == 3 and path[:2] == _WORKERS]
    if keys != [f"worker_{i}" for i in range(workers)]:
        raise _entry_error(
            node[0],
            "path",
            f"{_show_path(_WORKERS)} has {f.show(keys)}, not worker_0..worker_{workers - 1}",
        )
    for key in keys:
        worker = (*_WORKERS, key)
        # None starts the worker afresh; a dict is read by the main process and the worker
        if _kind_at(nodes, worker, _DICT_OR_NONE) == "dict":
            _check_keys(nodes, worker, _WORKER)
            if _kind_at(nodes, (*worker, "fetcher_state"), _DICT_OR_NONE) == "dict":
                _check_keys(nodes, (*worker, "fetcher_state"), _FETCHER)


def _kind_at(nodes: Nodes, path: tuple[Any, ...], kinds: frozenset[str]) -> str:
    """The kind of the node at ``path``, which must be there and of one of ``kinds``."""
    node = nodes.get(path)
    if node is None:
        raise StateError(
            f"the state has no {_show_path(path)}, which torchdata reads on load",
            field="entries",
        )
    index, kind, _value = node
    if kind not in kinds:
        raise _entry_error(
            index,
            "kind",
            f"{_show_path(path)} is of kind {kind}; torchdata reads "
            f"{' or '.join(sorted(kinds))} there",
            kind,
        )
    return kind


def _check_keys(nodes: Nodes, path: tuple[Any, ...], spec: Spec, required: bool = True) -> None:
    for key, kinds in spec.items():
        if required or (*path, key) in nodes:
            _kind_at(nodes, (*path, key), kinds)


def _check_layout(nodes: Nodes) -> None:
    """Every key torchdata's load_state_dict and iterator read is there, of a kind they use."""
    if len(nodes) == 1:
        return  # an empty state: no position
    if (_SNAPSHOT,) in nodes:
        _check_keys(nodes, (), _MULTI)
        _check_keys(nodes, (_SNAPSHOT,), _SNAPSHOT_KEYS)
        _check_keys(nodes, _MAIN, _MAIN_KEYS)
        prefix: tuple[str, ...] = _MAIN
    else:
        _check_keys(nodes, (), _ONE_PROCESS)
        if nodes[("fetcher_state",)][1] == "dict":
            _check_keys(nodes, ("fetcher_state",), _FETCHER)
        prefix = ()
    sampler = (*prefix, "_sampler_iter_state")
    if nodes[sampler][1] == "dict":
        _check_keys(nodes, sampler, _BATCHES)
        _check_keys(nodes, sampler, _BATCHES_OPTIONAL, required=False)
        if (*sampler, "sampler_iter_state") in nodes:
            _check_keys(nodes, (*sampler, "sampler_iter_state"), _RANDOM_SAMPLER)


def validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"entries"})
    entries = f.get(fields, "entries")
    if type(entries) not in (tuple, list):
        raise StateError(f"expected an array, got {type(entries).__name__}", field="entries")
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise StateError(
            f"{len(entries)} entries; a state has 1..{MAX_ENTRIES}",
            field="entries",
            value=len(entries),
        )
    nodes = _fast_nodes(entries) or _check_entries(entries)
    _check_layout(nodes)
    for path in _GENERATOR_PATHS:
        if path in nodes:
            # torchdata's RandomSampler sets its generator to this state on load
            index, kind, value = nodes[path]
            if kind != "tensor" or value[0] != "uint8" or len(value[1]) != 1:
                raise _entry_error(index, "value", f"{_show_path(path)} is not a torch CPU state")
            _torch.validate_cpu(bytes(value[2]), f"entries[{index}].value.data")
    if (_SNAPSHOT,) in nodes:
        _check_workers(nodes)


# -- restore -------------------------------------------------------------------------------------


def _batches(nodes: Mapping[tuple[Any, ...], tuple[int, str, Any]]) -> int | None:
    """Batches the epoch's iterator had yielded, or None for a state with no iterator."""
    if (_SNAPSHOT,) in nodes:
        return int(nodes[(_SNAPSHOT, "_snapshot_step")][2] + nodes[("_steps_since_snapshot",)][2])
    node = nodes.get(("_num_yielded",))
    return None if node is None else int(node[2])


def _nodes(fields: Mapping[str, Any]) -> Nodes:
    return {tuple(e[0]): (i, e[1], e[2]) for i, e in enumerate(fields["entries"])}


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(
            f"a StatefulDataLoader state cannot be restored into a {type(obj).__name__}"
        )
    nodes = _nodes(fields)
    if len(nodes) == 1:  # a loader with no position: nothing to match
        return
    multi = (_SNAPSHOT,) in nodes
    workers = nodes[_NUM_WORKERS][2] if multi else 0
    if workers != obj.num_workers:
        raise StateError(
            f"the snapshot's loader had num_workers={workers}, this one has "
            f"{obj.num_workers}; torchdata restores a position only into the same number of "
            "workers",
            field="entries",
        )
    has_generator = _epoch_start(nodes) is not None
    if has_generator != (getattr(obj.sampler, "generator", None) is not None):
        had = "shuffled with a generator" if has_generator else "did not shuffle"
        raise StateError(
            f"the snapshot's loader {had}, and this one's sampler does not match "
            f"({type(obj.sampler).__name__})",
            field="entries",
        )
    batches = _batches(nodes)
    try:
        length = len(obj)
    except TypeError:  # an IterableDataset without a length
        return
    if batches is not None and batches > length:
        raise StateError(
            f"the snapshot's loader had yielded {batches} batches of its epoch; this loader "
            f"has {length} per epoch",
            field="entries",
            value=batches,
        )


def _build(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict the entries describe (validated), with new tensors."""
    torch = _torch.require("restoring a StatefulDataLoader")
    made: dict[tuple[Any, ...], Any] = {}
    tuples: list[tuple[Any, ...]] = []
    for path, kind, value in fields["entries"]:
        path = tuple(path)
        if kind == "dict":
            node: Any = {}
        elif kind in ("list", "tuple"):
            node = []
            if kind == "tuple":
                tuples.append(path)
        elif kind == "tensor":
            dtype, shape, data = value
            dtype = getattr(torch, dtype)
            if data:
                node = torch.frombuffer(bytearray(data), dtype=dtype).reshape(tuple(shape))
            else:
                node = torch.empty(tuple(shape), dtype=dtype)
        else:
            node = value
        made[path] = node
        if path:
            parent = made[path[:-1]]
            if type(parent) is dict:
                parent[path[-1]] = node
            else:
                parent.append(node)
    for path in reversed(tuples):  # innermost last-made first, so inner tuples are done
        frozen = tuple(made[path])
        if path:
            made[path[:-1]][path[-1]] = frozen
        made[path] = frozen
    root: dict[str, Any] = made[()]
    return root


def running_iterator(loader: Any) -> bool:
    """Whether ``loader`` has an iterator that has yielded batches and is not finished."""
    iterator = loader._iterator
    return (
        iterator is not None
        and not iterator._finished
        and not loader._initial_iter_for_state_dict
        and iterator._num_yielded > 0
    )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    if running_iterator(obj):
        warn(
            "a StatefulDataLoader was restored while one of its iterators was running: that "
            "iterator goes on where it was; the restored position applies from the next iter()",
            LateRestoreWarning,
        )
    state = _build(fields)
    obj.load_state_dict(state)
    if not state:
        # load_state_dict({}) leaves a state loaded earlier pending; an empty one means none
        obj.next_iter_state = None
    else:
        _resume_exactly(obj)


def _resume_exactly(loader: Any) -> None:
    """Make the iterator torchdata builds from the loaded state leave the generators where
    the interrupted run left them.

    Building any iterator draws a base seed from the loader's generator, or from torch's
    global generator when the loader has none; the run that was interrupted had drawn that
    seed already, so the global generator is put back as it was right after the resumed
    iterator is built. In one process, torchdata's iterator also takes the
    sampler's generator state before drawing the base seed from the loader's generator; on
    load it sets that state and shuffles again, so when the two are one generator it ends
    one int64 draw behind the interrupted run, and every later epoch has another order:
    that draw is made again. (With workers the base seed is drawn first, and the state
    already includes it.) Done once, for the next iterator built, if a state is pending.
    """
    if getattr(loader.__dict__.get("_get_iterator"), "_rngvault_resume", False):
        return  # a restore before this one already installed it

    def _get_iterator() -> Any:
        del loader._get_iterator  # once: back to the class's method
        state = loader.next_iter_state
        if not state:
            return type(loader)._get_iterator(loader)
        torch = _torch.require("restoring a StatefulDataLoader")
        sampler = getattr(loader.sampler, "generator", None)
        glob = torch.default_generator
        # the global generator drawn as the loader's own is the case below
        saved = None if glob is loader.generator or glob is sampler else glob.get_state()
        try:
            iterator = type(loader)._get_iterator(loader)
        finally:
            if saved is not None:
                glob.set_state(saved)
        if "_num_yielded" in state and loader.generator is not None and sampler is loader.generator:
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        return iterator

    _get_iterator._rngvault_resume = True  # type: ignore[attr-defined]
    loader._get_iterator = _get_iterator


# -- describe, distance, derive ------------------------------------------------------------------


def describe(fields: Mapping[str, Any]) -> str:
    nodes = _nodes(fields)
    batches = _batches(nodes)
    if batches is None:
        return "no iterator yet (the next iter() starts an epoch)"
    finished = nodes.get(("_iterator_finished",), (0, "", False))[2]
    text = (
        f"epoch finished after {batches} batches"
        if finished
        else f"{batches} batches of the epoch yielded"
    )
    if (_SNAPSHOT,) in nodes:
        workers = nodes[_NUM_WORKERS][2]
        text += f", {workers} worker{'s' * (workers != 1)}"
    start = _epoch_start(nodes)
    if start is not None:
        text += "; sampler generator at epoch start: " + _torch.describe_cpu(start)
    return text


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any] | None:
    return None  # the next batch depends on the dataset and the sampler, not on a state alone


def _epoch_start(nodes: Nodes) -> bytes | None:
    """The sampler generator's state as the epoch started, when the loader shuffles."""
    for path in _GENERATOR_PATHS:
        if path in nodes:
            return bytes(nodes[path][2][2])
    return None


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    nodes_a, nodes_b = _nodes(a), _nodes(b)
    start_a, start_b = _epoch_start(nodes_a), _epoch_start(nodes_b)
    batches_a, batches_b = _batches(nodes_a), _batches(nodes_b)
    where = f"batch {batches_a} -> {batches_b}"
    if start_a is not None and start_b is not None and start_a != start_b:
        moved = _torch.cpu_distance(start_a, start_b, limit)
        detail = "; ".join(
            t for t in ("another epoch: the sampler generator moved", where, moved.detail) if t
        )
        return _distance.Moved(moved.status, moved.distance, moved.unit, detail)
    if start_a is None or batches_a is None or batches_b is None or batches_a == batches_b:
        # no generator tells the epochs apart, or the same batch with other worker or
        # dataset states
        return _distance.Moved("unknown", detail=f"the loader states differ ({where})")
    return _distance.by_sign(batches_b - batches_a, BATCHES, "same epoch")


def unit(fields: Mapping[str, Any]) -> str:
    return BATCHES


def derive(fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    """The same position with fresh randomness: the sampler's generator, the workers' base
    seed and the shared seed."""
    entries = list(fields["entries"])
    words = iter(seq.generate_state(len(entries), np.uint64).tolist())
    for index, (path, kind, _value) in enumerate(entries):
        word = next(words)
        if tuple(path) in _GENERATOR_PATHS and kind == "tensor":
            state = _torch.seeded_cpu_state(word)
            entries[index] = (path, kind, ("uint8", (len(state),), state))
        elif path[-1:] in (("_base_seed",), ("_shared_seed",)) and kind == "int":
            entries[index] = (path, kind, word >> 1)  # torch draws these as int64 >= 0
    return {"entries": tuple(entries)}


FAMILY = Family(
    name=NAME,
    kind="torchdata.stateful_dataloader.StatefulDataLoader",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
    probe=probe,
    distance=distance,
    unit=unit,
    derive=derive,
    environment=frozenset({"torch"}),
    version=lambda _fields: 2,  # a family of format version 2
    # a process has a few loaders; at its limits a state takes ~190 us to validate, so
    # 64 of them stay well within the 50 ms that MAX_STATES of the other families take
    max_states=MAX_PER_SNAPSHOT,
)
