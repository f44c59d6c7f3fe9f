"""exg_jax: EEG source localisation (MNE, dSPM, sLORETA, eLORETA) in JAX and Equinox.

The pipeline, one module per stage: ``sphere`` (head model) → ``forward`` (lead
field) → ``covariance`` (noise covariance) → ``inverse`` (inverse operator and
source estimates; ``eloreta`` for eLORETA) → ``resolution`` and ``snr``. Every
stage is a pure function over Equinox modules; see the README.
"""

from .covariance import NoiseCov, compute_covariance, compute_covariance_epochs
from .eloreta import EloretaOptions, EloretaStatus, eloreta_inverse_operator
from .forward import ForwardOperator, make_sphere_forward, make_sphere_forward_free
from .inverse import (
    InverseOperator,
    SourceEstimate,
    apply_inverse,
    apply_inverse_epochs,
    make_inverse_operator,
)
from .montage import standard_montage
from .resolution import (
    ResolutionOperator,
    get_cross_talk,
    get_point_spread,
    make_resolution_matrix,
    make_resolution_operator,
    peak_localisation_error,
    relative_amplitude,
    resolution_metrics,
    spatial_spread,
)
from .snr import estimate_snr
from .source_space import grid_source_space, ico_n_vertices, ico_source_space
from .sphere import (
    BergSchergParams,
    SphereModel,
    berg_scherg_params,
    fit_sphere_to_headshape,
    sphere_series_coefficients,
)

__version__ = "0.1.0"

__all__ = [
    "BergSchergParams",
    "EloretaOptions",
    "EloretaStatus",
    "ForwardOperator",
    "InverseOperator",
    "NoiseCov",
    "ResolutionOperator",
    "SourceEstimate",
    "SphereModel",
    "apply_inverse",
    "apply_inverse_epochs",
    "berg_scherg_params",
    "compute_covariance",
    "compute_covariance_epochs",
    "eloreta_inverse_operator",
    "estimate_snr",
    "fit_sphere_to_headshape",
    "get_cross_talk",
    "get_point_spread",
    "grid_source_space",
    "ico_n_vertices",
    "ico_source_space",
    "make_inverse_operator",
    "make_resolution_matrix",
    "make_resolution_operator",
    "make_sphere_forward",
    "make_sphere_forward_free",
    "peak_localisation_error",
    "relative_amplitude",
    "resolution_metrics",
    "sphere_series_coefficients",
    "spatial_spread",
    "standard_montage",
]
