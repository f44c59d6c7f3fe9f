"""Inverse methods as objects: ``MNE()``, ``dSPM()``, ``sLORETA()`` (and ``eLORETA()``).

A method is an ``eqx.Module`` with a fixed abstract interface
(:class:`AbstractInverseMethod`): given an :class:`~exg_jax.InverseOperator`
and λ² it returns an :class:`~exg_jax.ImagingKernel` (kernel, noise
normalisation, solver status). ``apply_inverse``, ``apply_inverse_epochs``,
``imaging_kernel`` and the resolution functions take any method object; the
strings ``"MNE"``, ``"dSPM"``, ``"sLORETA"``, ``"eLORETA"`` stay as aliases
(:func:`exg_jax.inverse.as_method`). A new method is a new subclass, in its
own module (see ``eloreta.py``); nothing else changes.

The minimum-norm family (:class:`AbstractMinimumNorm`) shares one kernel
built from the operator's SVD; a member only says how the SVD factors are
weighted (:meth:`AbstractMinimumNorm.factors`, eLORETA's weight fit) and how
the solution is noise-normalised (:meth:`AbstractMinimumNorm.noise_weight`).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._numerics import safe_div, safe_norm
from .kernel import ImagingKernel
from .status import SolverStatus

if TYPE_CHECKING:  # pragma: no cover
    from .inverse import InverseOperator

__all__ = [
    "MNE",
    "AbstractInverseMethod",
    "AbstractMinimumNorm",
    "SvdFactors",
    "dSPM",
    "sLORETA",
]


class AbstractInverseMethod(eqx.Module):
    """Interface of an inverse method applied through an ``InverseOperator``.

    Subclasses set the class attribute ``name`` (the string stored in
    ``SourceEstimate.method``) and implement :meth:`kernel`, a pure,
    traceable function. Iterative methods also override :meth:`for_eager`
    and :meth:`check` (see :class:`exg_jax.eLORETA`).
    """

    name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def kernel(
        self, inv: InverseOperator, lambda2: Float[Array, ""], pick_ori: str | None
    ) -> ImagingKernel:
        """The imaging kernel of this method for ``inv`` and λ² (pure, traceable).

        ``pick_ori``: None, ``"normal"`` or ``"vector"`` (validated by the
        caller). The kernel's rows are Cartesian (x, y, z) per source for a
        free operator, one row per source for a fixed one or ``"normal"``.
        """

    def for_eager(self) -> AbstractInverseMethod:
        """The variant compiled when every input is concrete (default: self).

        Iterative methods return a copy that does not throw inside the
        compiled program, so that :meth:`check` can raise afterwards with
        the iteration count and the final change.
        """
        return self

    def check(self, status: SolverStatus | None) -> None:
        """Eager check of a concrete status (default: nothing to check)."""
        return None


class SvdFactors(NamedTuple):
    """SVD factors of a (weighted) whitened minimum-norm problem.

    Attributes
    ----------
    eigen_fields : Array, shape (n_comp, n_white)
        ``Uᵀ``.
    sing : Array, shape (n_comp,)
        Singular values (dimensionless, trace-normalised).
    leads : Array, shape (n_src * n_orient, n_comp), A·m
        ``R^½ V``: the eigen leads with the source weighting applied.
    """

    eigen_fields: Float[Array, "comp white"]
    sing: Float[Array, " comp"]
    leads: Float[Array, "src_orient comp"]


class AbstractMinimumNorm(AbstractInverseMethod):
    """The minimum-norm family: ``K = R^½ V Γ Uᵀ W`` with ``Γ = S / (S² + λ²)``.

    Members implement :meth:`noise_weight` and may override :meth:`factors`.

    Notes
    -----
    Equivalent to ``mne.minimum_norm.inverse._assemble_kernel`` after
    ``prepare_inverse_operator(inv, nave=1, lambda2, method)``. The noise
    normalisation of a source ``k`` is ``1 / ‖(R^½ V)_k diag(w)‖`` with ``w``
    from :meth:`noise_weight` (the norm over the source's rows for a free
    source).
    """

    def factors(
        self, inv: InverseOperator, lambda2: Float[Array, ""]
    ) -> tuple[SvdFactors, SolverStatus | None]:
        """SVD factors of the weighted problem (default: the operator's own)."""
        leads = inv.eigen_leads * inv.source_std[:, None]
        return SvdFactors(inv.eigen_fields, inv.sing, leads), None

    @abc.abstractmethod
    def noise_weight(
        self, sing: Float[Array, " comp"], lambda2: Float[Array, ""]
    ) -> Float[Array, " comp"] | None:
        """Per-component weights of the noise normalisation, or None for none."""

    def kernel(
        self, inv: InverseOperator, lambda2: Float[Array, ""], pick_ori: str | None
    ) -> ImagingKernel:
        fac, status = self.factors(inv, lambda2)
        sing = fac.sing
        # Γ = s / (s² + λ²); the singular values are O(1) (trace-normalised)
        reginv = safe_div(sing, sing * sing + lambda2)
        trans = (reginv[:, None] * fac.eigen_fields) @ inv.whitener
        kern = fac.leads @ trans
        noise_norm = None
        weight = self.noise_weight(sing, lambda2)
        if weight is not None:
            # per-source noise std of the MNE solution (A·m), scale-free norms
            nrm = safe_norm(fac.leads * weight[None, :], axis=1)
            if inv.n_orient == 3:
                nrm = safe_norm(nrm.reshape(-1, 3), axis=1)
            noise_norm = safe_div(jnp.ones_like(nrm), nrm)
        n_orient = inv.n_orient
        if n_orient == 3:
            n_src = kern.shape[0] // 3
            if pick_ori == "normal":
                kern = kern[2::3]
                n_orient = 1
            elif inv.orient_frame is not None:
                k3 = kern.reshape(n_src, 3, -1)
                kern = jnp.einsum("nij,nic->njc", inv.orient_frame, k3).reshape(
                    3 * n_src, -1
                )
        return ImagingKernel(
            kernel=kern,
            noise_norm=noise_norm,
            src_pos=inv.src_pos,
            n_orient=n_orient,
            pick_ori=pick_ori,
            method=self.name,
            status=status,
        )


class MNE(AbstractMinimumNorm):
    """Minimum-norm estimate (A·m). Equivalent to MNE-Python's ``method="MNE"``."""

    name: ClassVar[str] = "MNE"

    def noise_weight(
        self, sing: Float[Array, " comp"], lambda2: Float[Array, ""]
    ) -> None:
        return None


class dSPM(AbstractMinimumNorm):
    """Dynamic statistical parametric mapping (Dale et al. 2000), dimensionless.

    Noise-normalised MNE: each source divided by the noise std of its MNE
    estimate, ``w = s / (s² + λ²)``. Equivalent to ``method="dSPM"``.
    """

    name: ClassVar[str] = "dSPM"

    def noise_weight(
        self, sing: Float[Array, " comp"], lambda2: Float[Array, ""]
    ) -> Float[Array, " comp"]:
        return safe_div(sing, sing * sing + lambda2)


class sLORETA(AbstractMinimumNorm):
    """Standardised LORETA (Pascual-Marqui 2002), dimensionless.

    Each source divided by the std of its MNE estimate under noise *and*
    source prior, ``w = s / (s² + λ²) · √(1 + s²/λ²)``. Equivalent to
    ``method="sLORETA"``.
    """

    name: ClassVar[str] = "sLORETA"

    def noise_weight(
        self, sing: Float[Array, " comp"], lambda2: Float[Array, ""]
    ) -> Float[Array, " comp"]:
        # s / (s² + λ²) · √(1 + s²/λ²) = s / (√(s² + λ²) · √λ²): no s²/λ², which
        # overflows float32 for a small λ².
        return safe_div(sing, jnp.sqrt(sing * sing + lambda2) * jnp.sqrt(lambda2))
