"""Workload W1 shared by bench/apply.py and bench/eloreta.py.

biosemi64, ico-`ico` free orientation (ico-4: 2562 sources), `n_epochs` x `n_times`
random epochs; an MNE sphere forward (``make_forward_solution``, numba) shared with
exg_jax via ``exg_jax.interop.forward_from_mne``, the same noise covariance, and the two
libraries' own inverse operators (free, loose 1, depth 0.8, average-reference projector).
"""

import time

import jax
import jax.numpy as jnp
import mne
import numpy as np
from mne.surface import _get_ico_surface

from exg_jax.covariance import NoiseCov
from exg_jax.interop import forward_from_mne
from exg_jax.inverse import make_inverse_operator

LAMBDA2 = 1.0 / 9.0


def build_w1(n_epochs=200, n_times=500, ico=4, seed=0):
    """Return a dict: info, fwd, cov, mcov, data, epochs, inv_mne, inv (exg_jax), t_fwd."""
    mne.set_log_level("ERROR")
    mont = mne.channels.make_standard_montage("biosemi64")
    info = mne.create_info(mont.ch_names, 500.0, "eeg")
    info.set_montage(mont)
    ctr = np.array([0.0, 0.0, 0.04])
    sphere = mne.make_sphere_model(r0=tuple(ctr), head_radius=0.09)
    rr = _get_ico_surface(ico)["rr"]
    src = mne.setup_volume_source_space(
        pos=dict(rr=rr * 0.06 + ctr, nn=rr.copy()), sphere=sphere
    )
    t0 = time.perf_counter()
    fwd = mne.make_forward_solution(info, None, src, sphere, eeg=True, meg=False)
    t_fwd = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    n = len(info.ch_names)
    noise = rng.standard_normal((n, 5000)) * 1e-6
    cov = noise @ noise.T / noise.shape[1]
    mcov = mne.Covariance(cov, info.ch_names, [], [], noise.shape[1])
    data = rng.standard_normal((n_epochs, n, n_times)) * 1e-6
    epochs = mne.EpochsArray(data, info, verbose=False)
    epochs.set_eeg_reference(projection=True)
    inv_mne = mne.minimum_norm.make_inverse_operator(
        epochs.info, fwd, mcov, loose=1.0, depth=0.8
    )
    inv = make_inverse_operator(
        forward_from_mne(fwd, reference=None),
        NoiseCov(jnp.asarray(cov)),
        avg_ref_proj=True,
    )
    return dict(
        info=info,
        fwd=fwd,
        cov=cov,
        mcov=mcov,
        data=data,
        epochs=epochs,
        inv_mne=inv_mne,
        inv=inv,
        t_fwd=t_fwd,
    )


def numpy_gemm_time(rows, n_chan, n_epochs, n_times, dtype, repeat=2, seed=1):
    """Best time of NumPy computing ``K @ x`` for every epoch (the kernel's shape).

    The per-epoch product is what both libraries compute (MNE with NumPy); it is
    the machine's GEMM floor for the workload, measured in the same run.
    """
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((rows, n_chan)).astype(dtype)
    x = rng.standard_normal((n_epochs, n_chan, n_times)).astype(dtype)
    out = np.empty((rows, n_times), dtype)
    np.dot(k, x[0], out=out)
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for e in x:
            np.dot(k, e, out=out)
        best = min(best, time.perf_counter() - t)
    return best


def to_float32(tree):
    """Cast every floating JAX array of a pytree (an operator) to float32."""
    return jax.tree.map(
        lambda x: (
            x.astype(jnp.float32)
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        tree,
    )
