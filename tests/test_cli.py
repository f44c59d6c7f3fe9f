"""The main job, ``exg-jax demo``, end to end on a small problem."""

import re

import numpy as np
import pytest

from exg_jax.cli import main


def _table(text, header):
    """Rows ``method -> [numbers]`` of the table that follows ``header``."""
    block = text.split(header, 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\s+(MNE|dSPM|sLORETA|eLORETA)\s+(.*)$", line)
        if m:
            rows[m.group(1)] = [
                float(v) for v in re.findall(r"-?[0-9]+\.[0-9]+", m.group(2))
            ]
    return rows


def test_demo_resolution_over_all_sources(tmp_path, capsys):
    # One small run (a 15 mm grid: 193 sources at every depth) checks the
    # whole report: timings, the resolution table, the depth bands, the figures.
    out = tmp_path / "demo.png"
    rc = main(["demo", "--spacing", "0.015", "--source", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "69 electrodes (standard_1010), float32" in text
    n_src = int(re.search(r"sources: (\d+) on a 15 mm grid", text)[1])
    assert n_src > 100, text

    # Timings: compilation separated from the run.
    m = re.search(
        r"forward .*: ([0-9.]+) s \(compile ([0-9.]+) s, run ([0-9.]+) s\)", text
    )
    assert m, text
    total, comp, run = map(float, m.groups())
    assert abs(total - comp - run) <= 0.011 and comp >= 0 and run >= 0
    assert re.search(
        r"inverse operator: [0-9.]+ s \(compile [0-9.]+ s, run [0-9.]+ s\)", text
    )
    assert re.search(r"total [0-9.]+ s, of which compilation [0-9.]+ s", text)
    assert "simulated dipole: source #3 " in text

    # The simulated dipole: estimated peak (x, y, z in mm) and its error per method.
    block = text.split("simulated dipole:", 1)[1]
    dip = re.findall(
        r"^\s+(MNE|dSPM|sLORETA|eLORETA)\s+\((-?[0-9.]+), (-?[0-9.]+), (-?[0-9.]+)\)\s+([0-9.]+)$",
        block,
        flags=re.M,
    )
    assert [d[0] for d in dip] == ["MNE", "dSPM", "sLORETA", "eLORETA"], text

    # Resolution over all sources: median / 95th percentile of the PSF peak
    # localisation error and spatial deviation (mm), then three timings.
    res = _table(text, "resolution over all")
    assert set(res) == {"MNE", "dSPM", "sLORETA", "eLORETA"}, text
    assert all(len(v) == 7 for v in res.values()), text
    med = {k: v[0] for k, v in res.items()}
    # Noise-free PSFs of radial dipoles, free-orientation inverse, lambda2 1/9:
    # eLORETA peaks on the source itself for every source (its exact
    # localisation property; measured 0.0 / 0.0); sLORETA for most of them
    # (median 0.0, 95th percentile 21 mm: MNE-Python's free-orientation sLORETA
    # divides by one number per source, the root of its 3 x 3 block's trace,
    # not by the block's inverse square root, so it is not exact); MNE and
    # dSPM are biased in depth (medians 15 and 30 mm).
    assert res["eLORETA"][:2] == [0.0, 0.0], text
    assert med["sLORETA"] == 0.0, text
    assert min(med["MNE"], med["dSPM"]) >= 10.0, text
    assert all(0 <= v[0] <= v[1] and 0 <= v[2] <= v[3] for v in res.values()), text

    # Per depth band: three bands whose counts add up to all sources.
    for what in ("peak localisation error", "spatial deviation"):
        block = text.split(f"{what} by distance from the centre", 1)[1]
        bands = re.findall(r"^\s+(\d+-\d+) mm\s+(\d+)\s", block, flags=re.M)[:3]
        assert [b for b, _ in bands] == ["0-20", "20-40", "40-60"], text
        assert sum(int(n) for _, n in bands) == n_src, text

    # Figures: one file per kind, beside --out.
    for kind in ("topomap", "sources", "resolution"):
        png = tmp_path / f"demo_{kind}.png"
        assert png.exists() and png.stat().st_size > 5000, kind
        assert f"    {png}\n" in text


# --------------------------------------------------------------------------- #
# Argument validation (issue 9, 3.9): argparse errors naming the option, before
# any work is done.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "argv, option, detail",
    [
        (["--snr", "0"], "--snr", "finite number > 0"),
        (["--snr", "nan"], "--snr", "finite number > 0"),
        (["--snr", "-3"], "--snr", "finite number > 0"),
        (["--snr", "inf"], "--snr", "finite number > 0"),
        (["--snr", "three"], "--snr", "not a number"),
        (["--source", "5000"], "--source", r"\[0, 708\)"),
        (["--source", "-1"], "--source", r"\[0, 708\)"),
        (["--source", "1.5"], "--source", "not an integer"),
        (["--spacing", "0.03", "--source", "42"], "--source", r"\[0, \d+\)"),
        (["--source-radius", "0.07"], "--source-radius", "0.067"),
        (["--source-radius", "0.067"], "--source-radius", "0.067"),
        (["--source-radius", "0"], "--source-radius", "> 0"),
        (["--source-radius", "-0.05"], "--source-radius", "> 0"),
        (["--spacing", "0"], "--spacing", "finite number > 0"),
        (["--spacing", "0.06"], "--spacing", "smaller than --source-radius"),
        (["--spacing", "0.001"], "--spacing", "more than 20000 sources"),
        (["--spacing", "1e-9"], "--spacing", "more than 20000 sources"),
        (["--loose", "1.5"], "--loose", r"\[0, 1\]"),
        (["--depth", "-0.1"], "--depth", r"\[0, 1\]"),
        (["--seed", "-1"], "--seed", ">= 0"),
        (["--montage", "no_such_montage"], "--montage", "no_such_montage"),
        (["--out", "no/such/folder/demo.png"], "--out", "does not exist"),
        (["--out", "."], "--out", "is a folder"),
        (["--out", "demo.notaformat"], "--out", "unsupported figure format"),
    ],
)
def test_bad_arguments_exit_naming_the_option(argv, option, detail, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *argv])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err = captured.err
    assert f"argument {option}" in err, err
    assert re.search(detail, err), err
    # Nothing was computed: the demo prints its header only once it runs.
    assert "exg-jax demo:" not in captured.out


def test_bad_out_ignored_without_plot(monkeypatch):
    # --no-plot: --out is not used, so it is not checked.
    from exg_jax import cli

    seen = []
    monkeypatch.setattr(cli, "_demo", lambda args: seen.append(args) or 0)
    assert main(["demo", "--no-plot", "--out", "no/such/folder/x.png"]) == 0
    assert seen[0].no_plot and seen[0].out == "no/such/folder/x.png"


def test_help_shows_defaults_and_inner_radius(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    assert "(default: 3.0)" in out  # --snr
    assert "(default: 0.06)" in out  # --source-radius
    assert "inner shell radius 0.067 m" in out  # in the --source-radius help
    assert "(default: standard_1010)" in out
    assert "(default: 0.01)" in out  # --spacing
    assert "biosemi64" in out  # --montage: MNE's names too


def test_demo_accepts_mne_montage_names(monkeypatch):
    pytest.importorskip("mne")
    from exg_jax import cli

    seen = []
    monkeypatch.setattr(cli, "_demo", lambda args: seen.append(args) or 0)
    assert main(["demo", "--no-plot", "--montage", "biosemi64"]) == 0
    names, pos = seen[0].montage_ch
    assert len(names) == 64 and pos.shape == (64, 3)
    # on the outer shell of the demo's sphere
    np.testing.assert_allclose(
        np.linalg.norm(pos - cli._CENTER, axis=1), 0.075, rtol=1e-9
    )


def test_batch_streams_a_file_to_region_time_courses(tmp_path, capsys):
    import numpy as np

    data, out = tmp_path / "ep.npy", tmp_path / "reg.npy"
    argv = [
        "batch", str(data), "--simulate", "13", "--n-times", "40", "--ico", "1",
        "--regions", "5", "--chunk-size", "4", "--out", str(out), "--no-cache",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "13/13" in err  # the progress bar (on by default in the CLI)
    reg = np.load(out)
    assert reg.shape == (13, 5, 40) and reg.dtype == np.float32
    assert np.all(np.isfinite(reg)) and np.any(reg != 0)
    # a file of the wrong shape: a clear message, exit code 2
    np.save(data, np.zeros((3, 4)))
    assert main(["batch", str(data), "--no-cache", "--out", str(out)]) == 2
    assert "must hold (n_epochs, n_chan, n_times)" in capsys.readouterr().err
