"""rngvault works with numpy and msgpack alone: torch and the server's dependencies are optional.

Each test runs a new interpreter in which torch (and fastapi, uvicorn, httpx, psycopg) cannot
be imported: ``sys.modules[name] = None`` makes ``import name`` raise ImportError, as if the
package were not installed.
"""

from __future__ import annotations

import json
import struct

import numpy as np

import rngvault

BLOCK = """
import sys
for name in ("torch", "fastapi", "starlette", "uvicorn", "httpx", "psycopg", "psycopg_pool"):
    sys.modules[name] = None
"""

WITHOUT_TORCH = (
    BLOCK
    + """
import json, random
import numpy as np
import rngvault

result = {}
rng = np.random.default_rng(1)
rng.random(3)
snapshot = rngvault.capture({"augment": rng})
result["captured"] = sorted(snapshot.states)
data = rngvault.encode(snapshot)
expected = [random.random(), float(np.random.random_sample()), float(rng.random())]
report = rngvault.restore(rngvault.decode(data), {"augment": rng})
result["restored"] = sorted(report.restored)
result["same_draws"] = expected == [
    random.random(), float(np.random.random_sample()), float(rng.random())
]

with_torch = rngvault.decode(open(sys.argv[1], "rb").read())
report = rngvault.restore(with_torch)
result["skipped"] = {name: report[name].detail for name in report.skipped}
try:
    rngvault.restore(with_torch, strict=True)
except rngvault.RestoreError as exc:
    result["strict"] = str(exc)
try:
    rngvault.seed_worker(0)
except rngvault.MissingExtraError as exc:
    result["missing_extra"] = [str(exc), exc.extra, isinstance(exc, ImportError)]
result["torch_importable"] = sys.modules["torch"] is not None
print(json.dumps(result))
"""
)


def torch_states() -> dict[str, rngvault.State]:
    """A torch.cpu and a torch.cuda:0 state built by hand, as torch would write them."""
    cpu = bytearray(5056)
    struct.pack_into("<QiiQ", cpu, 0, 1, 1, 1, 0)  # seed 1, left 1, seeded, next 0
    key = np.random.RandomState(1).get_state(legacy=False)["state"]["key"]
    cpu[24 : 24 + 624 * 8] = key.astype("<u8").tobytes()
    return {
        "torch.cpu": rngvault.State("torch.cpu", {"state": bytes(cpu)}),
        "torch.cuda:0": rngvault.State("torch.cuda", {"state": struct.pack("<QQ", 42, 8)}),
    }


def test_capture_encode_decode_restore_work_without_torch(run_python, tmp_path):
    """Without torch, fastapi or httpx: import, capture, encode, decode and restore work and
    are bit-exact; torch states are skipped (an error with strict); a torch feature raises
    MissingExtraError naming the extra to install."""
    path = tmp_path / "with-torch.msgpack"
    path.write_bytes(rngvault.encode(rngvault.Snapshot(torch_states())))
    done = run_python(WITHOUT_TORCH, str(path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["torch_importable"] is False
    assert result["captured"] == ["augment", "numpy.global", "python.global"]
    assert result["restored"] == ["augment", "numpy.global", "python.global"]
    assert result["same_draws"] is True
    assert result["skipped"] == {
        "torch.cpu": "torch is not imported in this process",
        "torch.cuda:0": "torch is not imported in this process",
    }
    assert "strict restore refused" in result["strict"]
    assert "torch.cpu: skipped" in result["strict"]
    message, extra, is_import_error = result["missing_extra"]
    assert extra == "torch" and is_import_error
    assert "pip install 'rngvault[torch]'" in message


IMPORT_DOES_NOT_LOAD_TORCH = """
import json, sys
import rngvault
snapshot = rngvault.capture()
data = rngvault.decode(rngvault.encode(snapshot))
rngvault.restore(data)
print(json.dumps({
    "torch": "torch" in sys.modules,
    "fastapi": "fastapi" in sys.modules,
    "names": sorted(snapshot.states),
}))
"""


def test_rngvault_does_not_import_torch_itself(run_python):
    """Where torch is installed, rngvault still leaves it unimported until the program
    imports it (importing torch costs seconds), and captures no torch state till then."""
    done = run_python(IMPORT_DOES_NOT_LOAD_TORCH)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {
        "torch": False,
        "fastapi": False,
        "names": ["numpy.global", "python.global"],
    }
