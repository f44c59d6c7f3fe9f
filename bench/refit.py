"""Benchmark: cold vs warm-started Berg–Scherg refits (``berg_scherg_params(init=)``).

In a head-model fit the model changes a little each step; ``init`` (the fit
of the previous model) replaces the grid stage and the ``n_starts`` Newton
runs by one Newton run. Times, per call, medians (and minima) over ``--repeat``
calls after compilation (``jax.block_until_ready``), of the jitted value
(``mu``, ``lam``) and value + gradient (w.r.t. the conductivities) of:

* the cold fit;
* the warm fit from the fit of a model whose skull conductivity is 1 % and
  5 % away;
* the warm fit from a bad init (all ``mu`` 0.999, ``lam`` 0), which falls back
  to the cold fit (the price of a miss);

with the Newton iterations of the retained run, on the 3-shell default and
MNE-Python's 4-shell model, float64 and float32. Not a test.

Run: python bench/refit.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from exg_jax.sphere import SphereModel, berg_scherg_params  # noqa: E402

_K = (1.0, 2.0, 3.0)


def _times_ms(fn, args, repeat):
    """Median and minimum per-call time (ms) after one compiling call; the
    minimum shows the cost on a machine shared with other work."""
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def _programs(radii, center):
    """Jitted value / value+grad, cold and warm, of a model with these radii."""
    k = jnp.asarray(_K, radii.dtype)

    def fit(sigmas, init):
        return berg_scherg_params(SphereModel(radii, sigmas, center), init=init)

    def loss(sigmas, init):
        p = fit(sigmas, init)
        return jnp.sum(k * p.mu**2) + 0.1 * jnp.sum(k * p.lam), p.status.iterations

    vg = jax.value_and_grad(loss, has_aux=True)
    return {
        "cold": (
            jax.jit(lambda s: fit(s, None)[:2]),
            jax.jit(lambda s: vg(s, None)),
        ),
        "warm": (
            jax.jit(lambda s, m, lam: fit(s, (m, lam))[:2]),
            jax.jit(lambda s, m, lam: vg(s, (m, lam))),
        ),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    models = {
        "3-shell": (SphereModel(), 1),
        "4-shell MNE": (SphereModel.mne_default(), 2),
    }
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, medians (minima) of "
        f"{args.repeat} calls after compilation"
    )
    header = (
        f"{'dtype':8s} {'model':12s} {'fit':20s} {'value ms (min)':>16s} "
        f"{'+grad ms (min)':>16s} {'iter':>5s}"
    )
    print(header)
    print("-" * len(header))
    for dtype in (jnp.float64, jnp.float32):
        for name, (sph, k) in models.items():
            radii = jnp.asarray(sph.radii, dtype)
            center = jnp.asarray(sph.center, dtype)
            sig = np.asarray(sph.conductivities, float)
            progs = _programs(radii, center)
            sigmas = jnp.asarray(sig, dtype)
            rows = [("cold", "cold", ())]
            for pct in (1, 5):
                s2 = sig.copy()
                s2[k] *= 1.0 + pct / 100.0
                near = berg_scherg_params(SphereModel(radii, jnp.asarray(s2, dtype)))
                rows.append((f"warm, skull +{pct} %", "warm", (near.mu, near.lam)))
            bad = (jnp.full(3, 0.999, dtype), jnp.zeros(3, dtype))
            rows.append(("warm, bad init", "warm", bad))
            for label, kind, init in rows:
                value, value_grad = progs[kind]
                t_v = _times_ms(value, (sigmas, *init), args.repeat)
                t_g = _times_ms(value_grad, (sigmas, *init), args.repeat)
                (_, n_iter), _ = value_grad(sigmas, *init)
                print(
                    f"{jnp.dtype(dtype).name:8s} {name:12s} {label:20s} "
                    f"{t_v[0]:8.3f} ({t_v[1]:5.3f}) {t_g[0]:8.3f} ({t_g[1]:5.3f}) "
                    f"{int(n_iter):5d}"
                )


if __name__ == "__main__":
    main()
