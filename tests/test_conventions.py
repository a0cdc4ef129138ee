"""Orbital conventions of each code: tables are signed permutations, PySCF's verified by evaluating its AOs."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil import conventions as cv
from acehamil.so3 import random_rotation, wigner_d_real


@pytest.mark.parametrize("code", cv.SUPPORTED_CODES)
@pytest.mark.parametrize("l", range(5))
def test_tables_are_signed_permutations(code, l):
    if code == "deeph" and l > 3:
        with pytest.raises(ValueError, match="l <= 3"):
            cv.orbital_table(code, l)
        return
    perm, sign = cv.orbital_table(code, l)
    assert sorted(perm.tolist()) == list(range(2 * l + 1))
    assert set(np.abs(sign).tolist()) == {1.0}


@pytest.mark.parametrize(
    "code,l,sign",
    [
        ("fhi-aims", 1, [1, 1, -1]),
        ("fhi-aims", 2, [1, 1, 1, -1, 1]),
        ("fhi-aims", 3, [1, 1, 1, 1, -1, 1, -1]),
        ("siesta", 1, [-1, 1, -1]),
        ("pyscf", 2, [1, 1, 1, 1, 1]),
    ],
)
def test_signs_match_verified_facts(code, l, sign):
    assert cv.orbital_table(code, l)[1].tolist() == sign


def test_unknown_code_and_l_are_rejected():
    with pytest.raises(ValueError, match="unknown orbital convention 'vasp'"):
        cv.orbital_table("vasp", 1)
    with pytest.raises(ValueError, match="l=7"):
        cv.orbital_table("pyscf", 7)


def test_code_conventions_registry():
    for code, conv in cv.CODE_CONVENTIONS.items():
        assert conv.code == code and conv.orbital_table in cv.SUPPORTED_CODES
        assert conv.bloch_sign in (1, -1) and conv.cell_index_sign in (1, -1)
    assert cv.CODE_CONVENTIONS["fhi-aims"].hartree_to_ev == cv.HARTREE_TO_EV["fhi-aims"]
    assert cv.CODE_CONVENTIONS["acehamiltonians"].cell_index_sign == -1


@pytest.mark.parametrize("l", [1, 2, 3])
@pytest.mark.parametrize("improper", [False, True])
def test_pyscf_table_makes_aos_rotate_with_wigner_d(rng, l, improper):
    """PySCF's AO values, reordered by the table, satisfy Y(Q r) = D^l(Q) Y(r) (which fixes order and signs)."""
    pyscf = pytest.importorskip("pyscf")
    mol = pyscf.gto.M(atom="He 0 0 0", basis={"He": [[l, [1.0, 1.0]]]}, unit="Bohr", verbose=0)
    perm, sign = cv.orbital_table("pyscf", l)
    r = rng.normal(size=(6, 3))
    Q = random_rotation(rng, improper=improper)
    vals = lambda pts: mol.eval_gto("GTOval_sph", pts)[:, perm] * sign  # noqa: E731
    np.testing.assert_allclose(vals(r @ Q.T), vals(r) @ wigner_d_real(l, Q).T, atol=1e-12)
    if l == 1:  # p in our order is (y, z, x)
        v = vals(r)
        np.testing.assert_allclose(v / np.linalg.norm(v, axis=1)[:, None], (r / np.linalg.norm(r, axis=1)[:, None])[:, [1, 2, 0]],
                                   atol=1e-12)


def test_metadata_is_self_describing():
    meta = cv.conventions_metadata()
    assert meta["energy_unit"] == "eV" and meta["bloch_sign"] == cv.BLOCH_SIGN == 1
    assert meta["conventions_version"] == cv.CONVENTIONS_VERSION
