"""exg_jax: EEG source localisation in JAX and Equinox."""

__version__ = "0.1.0"
