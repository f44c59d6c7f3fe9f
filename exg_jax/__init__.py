"""exg_jax: EEG source localisation (MNE, dSPM, sLORETA, eLORETA, LCMV) in JAX.

The pipeline, one module per stage: ``sphere`` (head model) → ``forward``
(the generic lead field) and ``sphere_forward`` (the spherical one) →
``covariance`` (noise covariance) → ``inverse`` (inverse operator and its
application) with the methods in ``methods`` / ``eloreta`` and the
``beamformer`` (LCMV) → ``kernel`` (imaging kernels, what every method
produces) → ``regularization`` (choosing λ² from the data), ``headfit``
(fitting the head model and λ² by gradients), ``resolution`` and ``snr``. Every stage is a pure function over Equinox modules; iterative
parts report a ``SolverStatus`` (``status``). See the README.
"""

from .beamformer import (
    LcmvFilters,
    apply_lcmv,
    apply_lcmv_cov,
    apply_lcmv_epochs,
    make_lcmv,
    make_lcmv_resolution_matrix,
)
from .cache import default_cache_dir, enable_compilation_cache
from .covariance import NoiseCov, compute_covariance, compute_covariance_epochs
from .eloreta import eLORETA, eloreta_weights
from .forward import ForwardOperator
from .headfit import (
    AbstractHeadModelCriterion,
    DistributedSources,
    HeadModelFit,
    HeadModelProblem,
    HeadModelTrace,
    KnownDipoles,
    UnknownMoments,
    fit_head_model,
    make_head_model_problem,
)
from .interop import (
    SensorData,
    cov_from_mne,
    data_from_mne,
    forward_from_mne,
    from_mne,
    inverse_from_mne,
    montage_from_mne,
    to_mne,
)
from .inverse import (
    InverseOperator,
    apply_inverse,
    apply_inverse_epochs,
    apply_inverse_raw,
    as_method,
    imaging_kernel,
    make_inverse_operator,
)
from .kernel import ImagingKernel, apply_imaging_kernel
from .methods import MNE, AbstractInverseMethod, AbstractMinimumNorm, dSPM, sLORETA
from .montage import standard_montage
from .reductions import AbstractReduction, LabelTimeCourses, parcellate
from .regularization import (
    GCV,
    LAMBDA2_RULES,
    AbstractCriterionRule,
    AbstractLambda2Rule,
    DataStats,
    Discrepancy,
    Evidence,
    Lambda2Selection,
    LCurve,
    SnrRule,
    data_stats,
    discrepancy,
    gcv,
    hat_matrix_trace,
    l_curve,
    log_evidence,
    select_lambda2,
    snr_rule_lambda2,
)
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
from .snr import SnrEstimate, estimate_snr
from .source_estimate import SourceEstimate
from .source_power import apply_inverse_cov
from .source_space import grid_source_space, ico_n_vertices, ico_source_space
from .spectral import BandPower, SourcePSD
from .sphere import (
    BergSchergParams,
    SphereModel,
    berg_scherg_params,
    fit_sphere_to_headshape,
    sphere_series_coefficients,
)
from .sphere_forward import make_sphere_forward, make_sphere_forward_free
from .status import RESULTS, SolverStatus

__version__ = "0.1.0"

__all__ = [
    "GCV",
    "LAMBDA2_RULES",
    "MNE",
    "RESULTS",
    "AbstractCriterionRule",
    "AbstractReduction",
    "AbstractHeadModelCriterion",
    "AbstractInverseMethod",
    "AbstractLambda2Rule",
    "AbstractMinimumNorm",
    "BergSchergParams",
    "DataStats",
    "DistributedSources",
    "Discrepancy",
    "Evidence",
    "HeadModelFit",
    "HeadModelProblem",
    "HeadModelTrace",
    "ForwardOperator",
    "ImagingKernel",
    "InverseOperator",
    "KnownDipoles",
    "LCurve",
    "Lambda2Selection",
    "LcmvFilters",
    "NoiseCov",
    "ResolutionOperator",
    "SnrEstimate",
    "SnrRule",
    "SensorData",
    "SolverStatus",
    "SourceEstimate",
    "SphereModel",
    "UnknownMoments",
    "apply_imaging_kernel",
    "apply_inverse",
    "apply_inverse_epochs",
    "apply_inverse_raw",
    "apply_inverse_cov",
    "BandPower",
    "SourcePSD",
    "LabelTimeCourses",
    "parcellate",
    "default_cache_dir",
    "enable_compilation_cache",
    "apply_lcmv",
    "apply_lcmv_cov",
    "apply_lcmv_epochs",
    "as_method",
    "berg_scherg_params",
    "compute_covariance",
    "compute_covariance_epochs",
    "cov_from_mne",
    "data_from_mne",
    "data_stats",
    "discrepancy",
    "dSPM",
    "eLORETA",
    "eloreta_weights",
    "estimate_snr",
    "fit_head_model",
    "fit_sphere_to_headshape",
    "forward_from_mne",
    "from_mne",
    "gcv",
    "get_cross_talk",
    "get_point_spread",
    "grid_source_space",
    "hat_matrix_trace",
    "ico_n_vertices",
    "ico_source_space",
    "imaging_kernel",
    "inverse_from_mne",
    "l_curve",
    "log_evidence",
    "make_head_model_problem",
    "make_inverse_operator",
    "make_lcmv",
    "make_lcmv_resolution_matrix",
    "make_resolution_matrix",
    "make_resolution_operator",
    "make_sphere_forward",
    "make_sphere_forward_free",
    "montage_from_mne",
    "peak_localisation_error",
    "relative_amplitude",
    "resolution_metrics",
    "sLORETA",
    "select_lambda2",
    "snr_rule_lambda2",
    "sphere_series_coefficients",
    "spatial_spread",
    "standard_montage",
    "to_mne",
]
