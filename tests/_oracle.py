"""The MNE-Python side of the parity tests: one small sphere problem built by MNE."""

import mne
import numpy as np
from mne.surface import _get_ico_surface


def mne_sphere_forward(
    montage="biosemi32", ico=2, *, sphere="default", src_radius=0.06
):
    """An EEG forward computed by MNE on a discrete ico source space with normals.

    Parameters
    ----------
    montage : str
        A montage bundled with MNE (no download).
    ico : int
        Icosahedron subdivision of the source sphere.
    sphere : {"default", "auto"}
        ``"default"``: MNE's 4-shell model, head radius 0.09 m, centre (0, 0, 0.04) m;
        ``"auto"``: ``make_sphere_model("auto", "auto", info)``.
    src_radius : float, m
        Radius of the source sphere around the model's centre.

    Returns
    -------
    info : mne.Info
    mne_sphere : mne.bem.ConductorModel
    fwd : mne.Forward
        Free orientation, against infinity (no reference applied).
    """
    mne.set_log_level("ERROR")
    mont = mne.channels.make_standard_montage(montage)
    info = mne.create_info(mont.ch_names, 1000.0, "eeg")
    info.set_montage(mont)
    if sphere == "auto":
        msph = mne.make_sphere_model("auto", "auto", info)
    else:
        msph = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=0.09)
    rr = _get_ico_surface(ico)["rr"]
    nn = rr / np.linalg.norm(rr, axis=1, keepdims=True)
    src = mne.setup_volume_source_space(
        pos=dict(rr=src_radius * nn + np.asarray(msph["r0"]), nn=nn), sphere=msph
    )
    fwd = mne.make_forward_solution(info, None, src, msph, eeg=True, meg=False)
    return info, msph, fwd
