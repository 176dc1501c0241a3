"""``plot_seeds``: a valid PNG with the outliers drawn in their own colour, clear errors for
nothing to draw and for a missing matplotlib, and no pyplot state touched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rngvault._errors import MissingExtraError, RngVaultError
from rngvault._plot import OUTLIER_COLOR, plot_seeds
from rngvault._seeds import Observation, SeedReport, analyze

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgb
from matplotlib.image import imread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def report(count: int, *, outlier: bool, groups: int = 1) -> SeedReport:
    """``count`` seeds of ``acc`` around 90 per group (lr differs between groups); seed
    ``count // 2`` of the first group at 60 when ``outlier``."""
    rng = np.random.default_rng(7)
    observations = []
    for g in range(groups):
        for seed in range(count):
            value = 60.0 if outlier and g == 0 and seed == count // 2 else 90 + rng.normal()
            observations.append(
                Observation(f"ns/g{g}-{seed}", seed, {"lr": 0.1 * (g + 1)}, {"acc": float(value)})
            )
    return analyze(observations, pattern="ns/*", metric="acc")


def outlier_pixels(path: Path) -> int:
    """How many pixels have the outlier colour (within antialiasing's rounding)."""
    image = imread(path)[:, :, :3]
    distance = np.abs(image - np.array(to_rgb(OUTLIER_COLOR))).max(axis=2)
    return int((distance < 0.02).sum())


def test_png_is_valid_and_outliers_have_their_colour(tmp_path: Path) -> None:
    """The planted outlier is flagged, and the PNG shows it in the outlier colour; the same
    seeds without it give a PNG with no pixel of that colour."""
    with_outlier = report(40, outlier=True)
    assert [o.seed for o in with_outlier.outliers] == [20]
    path = plot_seeds(with_outlier, tmp_path / "seeds.png")
    assert path == tmp_path / "seeds.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    assert height > 0 and width > 0
    assert outlier_pixels(path) > 20

    without = report(40, outlier=False)
    assert without.outliers == []
    clean = plot_seeds(without, tmp_path / "clean.png")
    assert clean.read_bytes()[:8] == PNG_SIGNATURE
    assert outlier_pixels(clean) == 0


@pytest.mark.parametrize("count", [2, 10_000])
def test_few_and_many_seeds_plot(tmp_path: Path, count: int) -> None:
    """Two seeds (no outliers possible) and ten thousand seeds both make an image."""
    path = plot_seeds(report(count, outlier=count > 2), tmp_path / f"{count}.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert imread(path).shape[0] > 100


def test_one_panel_per_group_and_metric(tmp_path: Path) -> None:
    """Two groups make a taller image than one; ``metric=`` keeps only that metric."""
    one = plot_seeds(report(10, outlier=False), tmp_path / "one.png")
    two = plot_seeds(report(10, outlier=False, groups=2), tmp_path / "two.png")
    assert imread(two).shape[0] > imread(one).shape[0]
    assert imread(two).shape[1] == imread(one).shape[1]
    chosen = plot_seeds(report(10, outlier=False), tmp_path / "acc.png", metric="acc")
    assert imread(chosen).shape == imread(one).shape


def test_nothing_to_plot_is_an_error_and_writes_no_file(tmp_path: Path) -> None:
    """A report without values, or without the metric asked for, is an RngVaultError that
    says so, and leaves no file behind."""
    empty = analyze([Observation("ns/a", None, {}, {"acc": 1.0})], pattern="ns/*")
    with pytest.raises(RngVaultError, match="nothing to plot.*1 run\\(s\\) skipped"):
        plot_seeds(empty, tmp_path / "empty.png")
    with pytest.raises(RngVaultError, match="no values of metric 'loss' \\(the report has acc\\)"):
        plot_seeds(report(5, outlier=False), tmp_path / "loss.png", metric="loss")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib: MissingExtraError (an ImportError) naming rngvault[plot]."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'rngvault\[plot\]'") as caught:
        plot_seeds(report(5, outlier=False), tmp_path / "x.png")
    assert isinstance(caught.value, ImportError)
    assert not (tmp_path / "x.png").exists()


def test_pyplot_is_left_alone(tmp_path: Path) -> None:
    """Plotting imports no pyplot (so no backend is chosen and no figure is opened), or,
    where pyplot is already in use, opens none of its figures."""
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
    plot_seeds(report(5, outlier=False), tmp_path / "x.png")
    if had_pyplot:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures
    else:
        assert "matplotlib.pyplot" not in sys.modules


def test_unwritable_path_is_an_os_error(tmp_path: Path) -> None:
    """A directory that does not exist: OSError, and no partial file anywhere."""
    with pytest.raises(OSError):
        plot_seeds(report(5, outlier=False), tmp_path / "missing" / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_dollar_signs_in_names_are_drawn_as_written(tmp_path: Path) -> None:
    """A metric or config value with "$...$" is text, not a math formula (an invalid one
    would raise inside matplotlib)."""
    metric = "x$\\foo$ (usd$)"
    observations = [
        Observation(f"ns/r{seed}", seed, {"note": "$\\bar$"}, {metric: float(seed)})
        for seed in range(5)
    ]
    observations.append(Observation("ns/other", 1, {"note": "$\\x$"}, {metric: 1.0}))
    report = analyze(observations, metric=metric)
    path = plot_seeds(report, tmp_path / "dollars.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
