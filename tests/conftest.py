"""Test configuration: float64 for the whole suite and a reproducible hypothesis profile."""

import os

import jax

jax.config.update("jax_enable_x64", True)

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Used by parametrised tests across modules.
METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
