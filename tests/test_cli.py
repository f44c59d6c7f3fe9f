"""The main job, ``exg-jax demo``, end to end on a small problem."""

import re

import pytest

from exg_jax.cli import main


def test_demo_runs_and_localises(tmp_path, capsys):
    out = tmp_path / "demo.png"
    rc = main(["demo", "--ico", "2", "--snr", "1000", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    errors = {
        m: float(e)
        for m, e in re.findall(
            r"^\s+(MNE|dSPM|sLORETA|eLORETA)\s+([0-9.]+)\s", text, flags=re.M
        )
    }
    assert set(errors) == {"MNE", "dSPM", "sLORETA", "eLORETA"}, text
    # Noise-free (SNR 1000): sLORETA and eLORETA have zero localisation error.
    assert errors["sLORETA"] == 0.0 and errors["eLORETA"] == 0.0, text
    assert out.exists() and out.stat().st_size > 1000


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
        (["--source", "5000"], "--source", r"\[0, 421\)"),
        (["--source", "-1"], "--source", r"\[0, 421\)"),
        (["--source", "1.5"], "--source", "not an integer"),
        (["--ico", "1", "--source", "42"], "--source", r"\[0, \d+\)"),
        (["--source-radius", "0.07"], "--source-radius", "0.067"),
        (["--source-radius", "0.067"], "--source-radius", "0.067"),
        (["--source-radius", "0"], "--source-radius", "> 0"),
        (["--source-radius", "-0.05"], "--source-radius", "> 0"),
        (["--ico", "-1"], "--ico", r"\[0, 7\]"),
        (["--ico", "9"], "--ico", r"\[0, 7\]"),
        (["--seed", "-1"], "--seed", ">= 0"),
        (["--montage", "biosemi64"], "--montage", "standard_1020"),
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


def test_demo_reports_compile_time(tmp_path, capsys):
    rc = main(["demo", "--ico", "1", "--source", "3", "--no-plot", "--snr", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    m = re.search(
        r"forward .*: ([0-9.]+) s \(compile ([0-9.]+) s, run ([0-9.]+) s\)", out
    )
    assert m, out
    total, comp, run = map(float, m.groups())
    assert abs(total - comp - run) <= 0.011 and comp >= 0 and run >= 0
    assert re.search(
        r"inverse operator: [0-9.]+ s \(compile [0-9.]+ s, run [0-9.]+ s\)", out
    )
    assert "of which compile (s)" in out
    assert "true source #3 " in out


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
