"""``rngvault seeds``: the library's numbers as JSON and text, the PNG, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault._seeding import seed_everything
from rngvault._seeds import seed_sensitivity
from tests.client.conftest import Run

# seed_everything warns, once per process, that PYTHONHASHSEED is unset: not what is tested
pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")

PLANTED = 7
SEEDS = 12


def runs(root: Path) -> None:
    """ns/r-0..11 (lr 0.1, acc around 90, seed 7 at 60), ns/q-0..2 (lr 0.2), ns/empty (a
    snapshot without metrics); each seeded with seed_everything."""
    rng = np.random.default_rng(5)
    plan = [(f"ns/r-{s}", s, 0.1, 60.0 if s == PLANTED else 90 + rng.normal()) for s in range(12)]
    plan += [(f"ns/q-{s}", s, 0.2, 80 + rng.normal()) for s in range(3)]
    plan += [("ns/empty", 99, 0.1, None)]
    for run, seed, lr, acc in plan:
        seed_everything(seed)
        with rngvault.Vault(root, run=run, config={"lr": lr}, on_error="raise") as vault:
            vault.snapshot("epoch0", metrics={"acc": 50.0} if acc is not None else None, step=0)
            if acc is not None:
                vault.snapshot("final", metrics={"acc": float(acc)}, step=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("seeds")
    runs(root)
    return str(root)


def test_json_equals_the_library(rv: Run, store: str) -> None:
    """--json is seed_sensitivity(...).to_dict() for the same store, pattern and metric,
    and it holds the planted outlier and the split on lr."""
    status, out, err = rv("--url", store, "seeds", "ns/*", "--metric", "acc", "--json")
    assert (status, err) == (0, "")
    data = json.loads(out)
    assert data == seed_sensitivity(store, "ns/*", metric="acc").to_dict()
    assert data["split_by"] == ["lr"]
    [outlier] = data["groups"][0]["metrics"][0]["outliers"]
    assert (outlier["seed"], outlier["run"]) == (PLANTED, f"ns/r-{PLANTED}")
    assert [len(g["runs"]) for g in data["groups"]] == [SEEDS, 3]
    assert data["skipped"] == [{"run": "ns/empty", "why": "no snapshot records metrics"}]


def test_at_a_snapshot(rv: Run, store: str) -> None:
    """--at NAME reads that snapshot: every run's acc at epoch0 is 50, so no spread."""
    status, out, _ = rv("seeds", "ns/r-*", "--at", "epoch0", "--json", "--url", store)
    data = json.loads(out)
    assert status == 0 and data == seed_sensitivity(store, "ns/r-*", at="epoch0").to_dict()
    [metric] = data["groups"][0]["metrics"]
    assert (metric["count"], metric["spread"], metric["outliers"]) == (SEEDS, 0.0, [])


def test_text_holds_the_verdict(rv: Run, store: str) -> None:
    """The text is render(report): the verdict naming the outlier, and the skipped run."""
    status, out, _ = rv("--url", store, "seeds", "ns/*", "--metric", "acc")
    report = seed_sensitivity(store, "ns/*", metric="acc")
    assert status == 0 and out == str(report) + "\n"
    assert report.verdicts[0] in out and f"seed {PLANTED} (z " in report.verdicts[0]
    assert "groups differ in: lr" in out and "ns/empty: no snapshot records metrics" in out


def test_plot_writes_a_png_and_says_where(rv: Run, store: str, tmp_path: Path) -> None:
    """--plot writes a PNG and names it on stderr; stdout keeps the JSON clean."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "seeds.png"
    status, out, err = rv("--url", store, "seeds", "ns/*", "--json", "--plot", str(target))
    assert status == 0 and json.loads(out)["pattern"] == "ns/*"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert err == f"plot written to {target}\n"


def one_line_error(status: int, out: str, err: str, code: int) -> str:
    assert (status, out) == (code, "") and "Traceback" not in err
    return err


def test_no_matching_run_is_one_line_exit_1(rv: Run, store: str) -> None:
    err = one_line_error(*rv("--url", store, "seeds", "zz/*"), code=1)
    assert err == "rngvault: error: no run matches 'zz/*'\n"


def test_bad_at_is_a_usage_error_naming_it(rv: Run, store: str) -> None:
    err = one_line_error(*rv("--url", store, "seeds", "ns/*", "--at", "../up"), code=2)
    assert "Invalid value for '--at'" in err and "'../up'" in err


def test_nothing_to_plot_is_one_line_exit_1(rv: Run, store: str, tmp_path: Path) -> None:
    """A metric no run has: the report says every run was skipped; --plot then fails with
    one line and writes nothing."""
    target = tmp_path / "x.png"
    status, out, err = rv(
        "--url", store, "seeds", "ns/*", "--metric", "loss", "--plot", str(target)
    )
    assert status == 1 and "0 group(s)" in out and not target.exists()
    assert err.startswith("rngvault: error: nothing to plot") and err.count("\n") == 1


def test_over_a_live_server_the_numbers_equal_the_library(rv: Run, live_server: Any) -> None:
    """Runs pushed to a real server by Vaults: the command's JSON over HTTP equals the
    library's report over HTTP, and the planted outlier is found there too."""
    runs(live_server.url)
    status, out, err = rv("--url", live_server.url, "seeds", "ns/*", "--metric", "acc", "--json")
    assert (status, err) == (0, "")
    data = json.loads(out)
    assert data == seed_sensitivity(live_server.url, "ns/*", metric="acc").to_dict()
    assert [o["seed"] for o in data["groups"][0]["metrics"][0]["outliers"]] == [PLANTED]


def test_plot_without_matplotlib_is_one_line_naming_the_extra(
    rv: Run, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--plot without matplotlib: the report, then one line saying what to install."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = tmp_path / "x.png"
    status, out, err = rv("--url", store, "seeds", "ns/*", "--plot", str(target))
    assert status == 1 and out.startswith("runs 'ns/*'") and not target.exists()
    assert err == (
        "rngvault: error: plotting seed sensitivity needs 'matplotlib', which is not "
        "installed: pip install 'rngvault[plot]'\n"
    )
