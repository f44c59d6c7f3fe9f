"""The main job, ``exg-jax demo``, end to end on a small problem."""

import re

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
