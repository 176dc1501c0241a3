"""The docs tell the truth: the README's quick start runs as written, and its links exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    """The Quick start block runs in a fresh interpreter and prints a restore report."""
    section = README.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env = dict(os.environ, PYTHONPATH=str(ROOT), RNGVAULT_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout and "augment" in done.stdout
    assert (tmp_path / "rng-store" / "runs" / "alice" / "quickstart" / "epoch0").is_dir()


def test_readme_links_point_at_files() -> None:
    """Every relative link in the README names a file of the repository."""
    links = re.findall(r"\]\(([^)#]+)\)", README)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
