"""The docs tell the truth: the README's quick start runs as written, and its links exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_quick_start_runs_as_written_twice(tmp_path: Path) -> None:
    """The Quick start block runs in a fresh interpreter and prints a restore report; run
    again in the same folder, it passes again and the store warns of no conflict."""
    section = README.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env = dict(os.environ, PYTHONPATH=str(ROOT), RNGVAULT_HOME=str(tmp_path / "home"))
    env.pop("RNGVAULT_URL", None)
    env.pop("RNGVAULT_STORE", None)
    snapshot = tmp_path / "rng-store" / "runs" / "alice" / "quickstart" / "epoch0" / "rank-0.snap"
    stored = b""
    for run in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", code.group(1)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, f"{run} run: {done.stderr}"
        assert "restored" in done.stdout and "augment" in done.stdout
        assert "StoreWarning" not in done.stderr and "other" not in done.stderr, done.stderr
        stored = stored or snapshot.read_bytes()
        assert snapshot.read_bytes() == stored  # the first run's snapshot, kept as it was


def test_readme_links_point_at_files() -> None:
    """Every relative link in the README names a file of the repository."""
    links = re.findall(r"\]\(([^)#]+)\)", README)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
