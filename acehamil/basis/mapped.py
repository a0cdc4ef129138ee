"""Features mapped linearly, ``flat(B) @ W``, without forming the features or unused products.

``flat(B) = AA @ C`` (:mod:`.product`), so ``flat(B) @ W = AA @ CW`` with ``CW = C @ W``
(``n_AA x n_y``): prediction needs ``n_y`` numbers per centre (the irreducible parts of every
block type), not the ``n_out`` features.  The top product level holds most of ``AA``
(e.g. 11,381 of 11,856 products of the example's off-site basis); of it only the products
with a non-zero row of ``CW`` and no factor known to vanish are formed.  Factors vanish, e.g.,
for a bond particle along ``z`` (its harmonics with ``m != 0`` are zero: the bond frame of
:meth:`acehamil.models.hamiltonian.offsite.OffsiteFamily.evaluate_mapped`), which leaves
about a fifth of the off-site products.
"""

from __future__ import annotations

import numpy as np


class ProductMap:
    """``AA @ CW`` of a basis' product tables from the lower levels and the kept top products.

    Parameters
    ----------
    tables : acehamil.basis.product.ProductTables
    CW : ndarray, shape (n_AA, n_y)
        ``C @ W``.
    vanishing : array of bool, shape (n_A,), optional
        One-particle sums ``A_a`` that are zero for every centre this map will see (their
        top-level products are skipped).

    Attributes
    ----------
    n_AA : int
        Size of the product basis it was built for (checked on use).
    n_low : int
        Products formed explicitly, column by column (levels below the top).
    n_y : int
    pre, last : ndarray of int, shape (n_top,)
        The kept top products ``AA_low[pre] * A[last]``.
    """

    def __init__(self, tables, CW: np.ndarray, vanishing=None):
        t = tables
        self._tables = t
        CW = np.asarray(CW, dtype=float)
        self.n_y = CW.shape[1]
        self.n_AA = t.n_AA
        top = t.spec.max_nu
        if top < 2:
            self.n_low = t.n_AA
            self.CW_low, self.pre, self.last, self.CW_top = CW, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, self.n_y))
            return
        o0, o1 = t.level_offsets[top], t.level_offsets[top + 1]
        self.n_low = o0
        self.CW_low = np.ascontiguousarray(CW[:o0])
        keep = np.any(CW[o0:o1] != 0, axis=1)
        if vanishing is not None:
            vanishing = np.asarray(vanishing, dtype=bool)
            if vanishing.shape != (t.n_A,):
                raise ValueError(f"vanishing must have shape ({t.n_A},), got {vanishing.shape}")
            keep &= ~np.any(vanishing[t.level_tuples(top)], axis=1)
        k = np.nonzero(keep)[0]
        self.pre, self.last = t.prefix[top - 2][k], t.last[top - 2][k]
        self.CW_top = np.ascontiguousarray(CW[o0 + k])

    def with_mirror(self, sign) -> "ProductMap":
        """The map of the centres and of their mirror images at once: ``n_y`` doubled.

        The mirror image of a centre has one-particle sums ``s_a A_a`` (signs ``s_a = +-1``), so each
        product ``AA_k`` only changes by the product of its factors' signs: the mirrored outputs are the
        same products times sign-scaled rows of ``CW`` (exact: only signs), and every product, gather and
        matrix product is done once for both.

        Parameters
        ----------
        sign : array of float, shape (n_A,)
            ``+1`` or ``-1`` per one-particle sum.

        Returns
        -------
        ProductMap
            ``evaluate`` gives ``(nb, 2 n_y)``: the outputs, then those of the mirror images.
        """
        t = self._tables
        sign = np.asarray(sign, dtype=float).reshape(-1)
        if sign.shape != (t.n_A,) or not np.all(np.abs(sign) == 1.0):
            raise ValueError(f"mirror signs must be +-1 with shape ({t.n_A},)")
        aa = np.ones(t.n_AA)
        for nu in range(1, t.spec.max_nu + 1):
            o0, o1 = t.level_offsets[nu], t.level_offsets[nu + 1]
            aa[o0:o1] = np.prod(sign[t.level_tuples(nu)], axis=1)
        out = object.__new__(ProductMap)
        out.__dict__.update(self.__dict__)
        out.n_y = 2 * self.n_y
        out.CW_low = np.ascontiguousarray(np.hstack([self.CW_low, aa[:self.n_low, None] * self.CW_low]))
        sigma = aa[self.pre] * sign[self.last]
        out.CW_top = np.ascontiguousarray(np.hstack([self.CW_top, sigma[:, None] * self.CW_top]))
        return out

    @property
    def n_top(self) -> int:
        """Top-level products formed per centre."""
        return len(self.pre)

    def evaluate(self, AA_low: np.ndarray, A: np.ndarray) -> np.ndarray:
        """``AA @ CW`` of a batch from its lower products ``AA_low (nb, n_low)`` and ``A (nb, n_A)``.

        Returns
        -------
        ndarray, shape (nb, n_y), float64
        """
        out = AA_low @ self.CW_low
        if self.n_top:
            top = AA_low[:, self.pre]
            top *= A[:, self.last]
            out += top @ self.CW_top
        return out
