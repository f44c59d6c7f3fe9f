"""The eager validation layer (exg_jax._validate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exg_jax._validate import check_finite


@pytest.mark.parametrize("make", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_value_and_index(make, bad):
    x = np.zeros((3, 4))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"data contains 1 non-finite.*\(2, 1\)"):
        check_finite("data", make(x))
    check_finite("data", make(np.zeros((3, 4))))  # finite: no error


def test_check_finite_concrete_constant_inside_jit():
    # A concrete array seen while a jit is traced is still checked (eagerly);
    # a traced one is left to the kernel.
    bad = jnp.array([1.0, jnp.nan])

    def f(y):
        check_finite("data", bad)
        return y

    with pytest.raises(ValueError, match="data contains 1 non-finite"):
        jax.jit(f)(1.0)

    def g(y):
        check_finite("y", y)
        return y * 2

    assert np.isnan(jax.jit(g)(jnp.nan))  # traced: passed through, not checked here
    np.testing.assert_array_equal(jax.jit(g)(jnp.array([1.0, 2.0])), [2.0, 4.0])
