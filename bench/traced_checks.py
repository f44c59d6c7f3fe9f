"""Cost of the checks that survive tracing (``eqx.error_if`` on λ² and on the
eLORETA convergence status) in ``apply_inverse_epochs`` under ``jax.jit``.

The same jitted call is AOT-compiled twice in one process, with the checks and
without them (removed by patching the module globals before the second
trace), and the two executables are timed interleaved (order alternating), so
that machine load affects both alike. Synthetic average-referenced gain, free
orientation (loose 0.2), float64.

Usage: PYTHONPATH=. python bench/traced_checks.py N_CHAN ICO N_EPOCHS N_TIMES REPEAT
e.g.   PYTHONPATH=. python bench/traced_checks.py 32 2 20 100 200
"""

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import exg_jax as ex  # noqa: E402
import exg_jax.eloreta as E  # noqa: E402
import exg_jax.inverse as I  # noqa: E402
from exg_jax.forward import ForwardOperator  # noqa: E402


def main():
    n_chan, ico, n_ep, n_t, repeat = (int(a) for a in sys.argv[1:6])
    rng = np.random.default_rng(0)
    src_pos, src_nn = ex.ico_source_space(ico)
    g = rng.standard_normal((n_chan, 3 * src_pos.shape[0])) * 1e-7
    g -= g.mean(0)
    fwd = ForwardOperator(jnp.asarray(g), src_pos, src_nn, "free", "average")
    noise = rng.standard_normal((n_chan, 4000)) * 1e-6
    noise -= noise.mean(0)
    inv = ex.make_inverse_operator(fwd, ex.compute_covariance(noise), loose=0.2)
    epochs = jnp.asarray(rng.standard_normal((n_ep, n_chan, n_t)) * 1e-6)
    lam = jnp.asarray(1 / 9)

    def compiled(method):
        def f(ep, lam_, inv_):
            return ex.apply_inverse_epochs(ep, inv_, lam_, method).data

        t = time.perf_counter()
        c = jax.jit(f).lower(epochs, lam, inv).compile()
        return c, time.perf_counter() - t

    orig = (I.lambda2_error_if, E.lambda2_error_if, E.error_if_failed)
    res = {}
    for method in ("MNE", "sLORETA", "eLORETA"):
        jax.clear_caches()
        c_chk, t_chk = compiled(method)
        I.lambda2_error_if = E.lambda2_error_if = lambda x: x
        E.error_if_failed = lambda token, status, throw: token
        jax.clear_caches()
        c_no, t_no = compiled(method)
        I.lambda2_error_if, E.lambda2_error_if, E.error_if_failed = orig
        callbacks = [c.as_text().count("callback") for c in (c_chk, c_no)]
        assert np.array_equal(
            np.asarray(c_chk(epochs, lam, inv)), np.asarray(c_no(epochs, lam, inv))
        )
        tc, tn = [], []
        for i in range(repeat):
            pair = ((c_chk, tc), (c_no, tn))
            for c, acc in pair if i % 2 else pair[::-1]:
                t = time.perf_counter()
                jax.block_until_ready(c(epochs, lam, inv))
                acc.append(time.perf_counter() - t)
        res[method] = {
            "compile_s [checks, none]": [round(t_chk, 3), round(t_no, 3)],
            "min_ms [checks, none]": [round(1e3 * min(tc), 3), round(1e3 * min(tn), 3)],
            "median_ms [checks, none]": [
                round(1e3 * float(np.median(tc)), 3),
                round(1e3 * float(np.median(tn)), 3),
            ],
            "callbacks in HLO": callbacks,
        }
    out = dict(
        shape=[n_ep, n_chan, n_t],
        n_src=int(src_pos.shape[0]),
        backend=jax.default_backend(),
        device=str(jax.devices()[0]),
        **res,
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
