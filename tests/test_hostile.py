"""Hostile inputs and faults (issue 11): every case asserts the specific refusal or warning AND
that no existing file changed (hashes before/after) and no temporary was left behind.

Classes (numbers of issue 11): 1 output == input, 2 one write rule, 3 concurrent writers,
4 failures mid-write, 5 Hermiticity, 6 missing S / gap line, 7 empty selections and strict
JSON, 8 generate settings, 9 impossible reader input and checksums, 10 bands --reference
pairing, 11 honest S check, 12 any k list plots, 13 runaway sizes, 14 outputs checked first /
streamed predictions, 15 user errors vs bugs, 16 modes, temporaries, messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from acehamil.cli import is_user_error, main
from acehamil.errors import UserError
from acehamil.io.dataset import append_dataset, read_dataset, write_dataset
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[data]
train = "train.h5"
test = [-1]

[h_onsite]
r_cut = 4.0
max_nu = 1
max_degree = [4]
n_max = 3

[h_offsite]
r_cut = 4.0
r_env = 0.0
max_nu = 1
max_degree = [8]
n_max = 8

[s_offsite]
r_cut = 4.0
max_nu = 1
max_degree = [8]
n_max = 8

[solver]
lam = 1e-10
"""


# ----------------------------------------------------------------------------- helpers
def _digest(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def unchanged(folder: Path, new_ok=()):
    """Assert that no existing file under ``folder`` changed, and no file (temporary) appeared
    except those named in ``new_ok``."""
    before = _digest(folder)
    yield
    after = _digest(folder)
    for name, h in before.items():
        assert after.get(name) == h, f"{name} changed or vanished"
    extra = set(after) - set(before) - {str(n) for n in new_ok}
    extra = {e for e in extra if not e.endswith(".lock")}  # sidecar lock files are documented
    assert not extra, f"unexpected new files: {sorted(extra)}"


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _structures(n=4, seed=3, prefix="si"):
    rng = np.random.default_rng(seed)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(n):
        at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
        at.rattle(0.08, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S, n_electrons=16.0, info={"name": f"{prefix}-{k}"}))
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: train.h5 (4 SK silicon structures), fit.toml, a fitted model m.h5, xyz files."""
    d = tmp_path_factory.mktemp("hostile")
    write_dataset(d / "train.h5", _structures())
    (d / "fit.toml").write_text(CONFIG)
    assert main(["fit", str(d / "fit.toml"), "-o", str(d / "m.h5"), "-q"]) == 0
    at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    write(d / "one.xyz", at)
    # one Si atom in a 1.2 Å cube: passes the atom checks (its images 1.2 Å away, over half the Si-Si bond)
    # yet the model's S(k) is not positive definite there: what the CLI's S warnings are tested on
    write(d / "tight.xyz", Atoms("Si", positions=[[0, 0, 0]], cell=[1.2] * 3, pbc=True))
    return d


@pytest.fixture
def w(ws, tmp_path):
    """A fresh copy of the workspace per test (so refusals can be checked file by file)."""
    for p in ws.iterdir():
        if p.is_file():
            shutil.copy2(p, tmp_path / p.name)
    return tmp_path


def _strict_loads(text):
    def bad(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------- 1. output equal to input
@pytest.mark.parametrize("argv, label", [
    (["predict", "m.h5", "train.h5", "-o", "train.h5"], "input STRUCTURES"),
    (["predict", "m.h5", "train.h5", "-o", "m.h5"], "input MODEL"),
    (["predict", "m.h5", "link.h5", "-o", "train.h5"], "input STRUCTURES"),
    (["predict", "m.h5", "train.h5", "-o", "hard.h5"], "input STRUCTURES"),
    (["convert", "train.h5", "-o", "train.h5"], "input SOURCE 1"),
    (["fit", "fit.toml", "-o", "train.h5"], "CONFIG[data.train]"),
    (["fit", "fit.toml", "-o", "fit.toml"], "input CONFIG"),
    (["fit", "fit.toml", "-o", "new.h5", "--report", "new.h5"], "are the same file"),
    (["bands", "train.h5", "--json", "train.h5"], "input DATA"),
    (["bands", "train.h5", "--json", "link.h5", "--overwrite"], "input DATA"),
    (["dos", "train.h5", "--json", "a.json", "-o", "a.json"], "must end in"),
    (["bands", "train.h5", "--json", "b.png", "-o", "b.png"], "are the same file"),
])
def test_output_equal_to_input_is_refused(w, capsys, argv, label, monkeypatch):
    monkeypatch.chdir(w)
    os.symlink("train.h5", w / "link.h5")
    if (w / "hard.h5").exists():
        os.unlink(w / "hard.h5")
    os.link(w / "train.h5", w / "hard.h5")
    with unchanged(w):
        rc, _, err = _run(argv, capsys)
    assert rc == 2 and label in err and "Traceback" not in err


# ------------------------------------------------------------- 2. one write rule
@pytest.mark.parametrize("argv", [
    ["convert", "train.h5", "-o", "out.h5"],
    ["predict", "m.h5", "train.h5", "-o", "out.h5"],
    ["fit", "fit.toml", "-o", "out.h5"],
    ["bands", "train.h5", "--json", "out.h5"],
    ["dos", "train.h5", "--json", "out.h5", "--kmesh", "2", "2", "2"],
    ["generate", "pyscf", "--base", "si2", "--count", "1", "-o", "out.h5"],
])
def test_existing_output_is_refused_without_overwrite(w, capsys, argv, monkeypatch):
    monkeypatch.chdir(w)
    (w / "out.h5").write_bytes(b"precious")
    with unchanged(w):
        rc, _, err = _run(argv, capsys)
    assert rc == 2 and "exists; pass --overwrite" in err


def test_overwrite_replaces_and_append_adds(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    write_dataset(w / "other.h5", _structures(2, seed=9, prefix="other"))
    assert _run(["convert", "train.h5", "-o", "out.h5"], capsys)[0] == 0
    assert _run(["convert", "other.h5", "-o", "out.h5", "--append"], capsys)[0] == 0
    assert len(read_dataset(w / "out.h5")) == 6
    with unchanged(w):  # appending the same names again: refused, file untouched
        rc, _, err = _run(["convert", "other.h5", "-o", "out.h5", "--append"], capsys)
    assert rc == 2 and "already in the dataset" in err
    assert _run(["convert", "other.h5", "-o", "out.h5", "--overwrite"], capsys)[0] == 0
    assert read_dataset(w / "out.h5").names == ("other-0", "other-1")


# ------------------------------------------------------------- 3. concurrency
_TINY = textwrap.dedent("""
    import numpy as np
    from ase import Atoms
    from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
    def tiny(name, seed):  # a two-atom molecule with exactly Hermitian H and S
        rng = np.random.default_rng(seed)
        basis = OrbitalBasis.from_dict({{1: [(1, 0)]}})
        h = rng.normal(size=(2, 2)); h = h + h.T
        S = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [np.array([[1.0, 0.3], [0.3, 1.0]])])
        H = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [h])
        at = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74 + 0.01 * rng.random()]])
        return StructureData(at, basis, H=(H,), S=S, info={{"name": name}})
""")

_APPENDER = _TINY + textwrap.dedent("""
    import sys
    from acehamil.io.dataset import append_dataset
    for k in range(int(sys.argv[2])):
        append_dataset(sys.argv[1], [tiny(f"{{sys.argv[3]}}-{{k}}", k)])
""")

_GENERATOR = _TINY + textwrap.dedent("""
    import sys, time
    from acehamil.io.generator import generate
    from dataclasses import replace
    plan = [(f"g-{{k:04d}}", tiny("x", k).atoms) for k in range(8)]
    def compute(atoms, state):  # a cheap fake DFT code
        time.sleep(0.05)
        return replace(tiny("x", 0), atoms=atoms), None
    generate(plan, sys.argv[1], compute, progress=False, settings={{"fake": 1}})
""")


def _spawn(code, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_appending_keep_every_structure_once(tmp_path):
    path = tmp_path / "d.h5"
    code = _APPENDER.format()
    procs = [_spawn(code, path, 8, "a"), _spawn(code, path, 8, "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    names = read_dataset(path).names
    assert sorted(names) == sorted([f"a-{k}" for k in range(8)] + [f"b-{k}" for k in range(8)])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_two_generate_runs_into_one_file_give_each_structure_once(tmp_path):
    path = tmp_path / "g.h5"
    code = _GENERATOR.format()
    procs = [_spawn(code, path), _spawn(code, path)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    names = read_dataset(path).names
    assert sorted(names) == [f"g-{k:04d}" for k in range(8)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_duplicate_names_are_refused(tmp_path):
    sds = _structures(2)
    with pytest.raises(UserError, match="already in the dataset"):
        write_dataset(tmp_path / "d.h5", [sds[0], sds[0]])
    assert not list(tmp_path.iterdir())
    write_dataset(tmp_path / "d.h5", sds)
    with unchanged(tmp_path):
        with pytest.raises(UserError, match="'si-1' is already in the dataset"):
            append_dataset(tmp_path / "d.h5", [sds[1]])


# ------------------------------------------------------------- 4. failures mid-write
def test_injected_failure_mid_append_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, _structures(2))
    os.chmod(path, 0o664)

    def exploding():
        yield _structures(1, seed=5, prefix="new")[0]
        raise RuntimeError("boom")

    with unchanged(tmp_path):
        with pytest.raises(RuntimeError, match="boom"):
            append_dataset(path, exploding())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o664


_FILLER = _TINY + textwrap.dedent("""
    import os, resource, signal, sys
    from acehamil.io.dataset import append_dataset
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # writes past the limit fail with EFBIG
    limit = os.path.getsize(sys.argv[1]) + 2048
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        append_dataset(sys.argv[1], [tiny(f"big-{{k}}", k) for k in range(20)])
    except OSError as err:
        print("OSError", err.errno)
        sys.exit(3)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE fault injection is Linux-only here")
def test_size_limit_during_append_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "d.h5"
    ns = {}
    exec(_TINY.format(), ns)  # the appended molecules' basis (H): a dataset holds one basis
    write_dataset(path, [ns["tiny"](f"h-{k}", 100 + k) for k in range(2)])
    with unchanged(tmp_path):
        p = _spawn(_FILLER.format(), path)
        out, err = p.communicate(timeout=120)
    assert p.returncode == 3, (p.returncode, err[-2000:])  # a clean error, never a segfault (139/-11)
    assert "OSError" in out
    assert len(read_dataset(path)) == 2


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    import acehamil.io.safe_write as sw

    path = tmp_path / "d.h5"
    write_dataset(path, _structures(1))
    monkeypatch.setattr(sw.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with unchanged(tmp_path):
        with pytest.raises(UserError, match="not enough disk space"):
            append_dataset(path, _structures(1, seed=4, prefix="x"))


# ------------------------------------------------------------- 5. Hermiticity
def _break_block(sd, which="H", factor=1.5):
    m = sd.H[0] if which == "H" else sd.S
    p = int(np.nonzero(m.i != m.j)[0][0])
    data = m.data.copy()
    data[m.offsets[p]:m.offsets[p + 1]] *= factor
    bad = m.with_data(data)
    return (replace(sd, H=(bad,)) if which == "H" else replace(sd, S=bad)), p


@pytest.mark.parametrize("which", ["H", "S"])
def test_non_hermitian_data_are_refused_on_read_naming_the_block(tmp_path, which):
    sd, p = _break_block(_structures(1)[0], which)
    path = tmp_path / "bad.h5"
    write_dataset(path, [sd])  # writing keeps whatever it is given ("full" storage)
    with unchanged(tmp_path):
        with pytest.raises(UserError, match=rf"{which}.* is not Hermitian: block \(i=\d+, j=\d+, T=") as err:
            read_dataset(path)[0]
    m = sd.H[0] if which == "H" else sd.S
    assert f"i={int(m.i[p])}" in str(err.value) or f"i={int(m.j[p])}" in str(err.value)
    assert len(read_dataset(path, validate=False)[0].H) == 1  # still inspectable


def test_non_hermitian_in_memory_is_refused_by_the_solver_and_the_fit():
    from acehamil.models.hamiltonian.config import ModelConfig
    from acehamil.models.hamiltonian.fit import fit
    from acehamil.tb.bands import eigenvalues

    sd, _ = _break_block(_structures(1)[0], "S", 2.0)
    with pytest.raises(UserError, match="S is not Hermitian"):
        eigenvalues(sd, [[0, 0, 0]])
    good = _structures(2)
    cfg = ModelConfig.from_dict({"h_offsite": {"r_env": 0.0, "max_nu": 1, "max_degree": [4], "n_max": 4}})
    with pytest.raises(UserError, match="training structure 1 .*H \\(spin 0\\) is not Hermitian"):
        fit([good[0], _break_block(good[1])[0]], cfg, progress=False)


def test_non_hermitian_fhi_aims_like_input_is_refused_by_convert(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    sd, _ = _break_block(_structures(1)[0], "H")
    with h5py.File(w / "bad_acehamiltonians.h5", "w"):
        pass
    import acehamil.cli.convert as conv

    monkeypatch.setattr(conv, "read_source", lambda src, text=False, fmt=None: [sd])
    with unchanged(w, new_ok=()):
        rc, _, err = _run(["convert", "bad_acehamiltonians.h5", "-o", "out.h5"], capsys)
    assert rc == 2 and "H (spin 0) is not Hermitian" in err


# ------------------------------------------------------------- 6. missing S, gap line
def test_missing_s_is_refused_unless_orthonormal_is_asked(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    sd = replace(_structures(1)[0], S=None)
    write_dataset(w / "noS.h5", [sd])
    with unchanged(w):
        rc, _, err = _run(["bands", "noS.h5", "--npoints", "5"], capsys)
    assert rc == 2 and "has no overlap S" in err and "--orthonormal" in err
    rc, out, _ = _run(["bands", "noS.h5", "--npoints", "5", "--orthonormal"], capsys)
    assert rc == 0 and "k-points" in out


def test_gap_line_never_shows_vbm_above_cbm():
    from acehamil.cli.bands import gap_text
    from acehamil.tb.bands import band_gap

    gap = band_gap([[-1.0, 2.0], [3.5, 5.0]], n_electrons=2)  # band 0 at k1 lies above band 1 at k0: a metal
    assert gap.vbm > gap.cbm
    text = gap_text(gap)
    assert "metallic" in text and "VBM" not in text
    assert "VBM" in gap_text(band_gap([[-1.0, 2.0], [-0.5, 1.0]], n_electrons=2))


# ------------------------------------------------------------- 7. empty selections, strict JSON
@pytest.mark.parametrize("argv, message", [
    (["evaluate", "m.h5", "train.h5", "--index", "50:60"], "selects no structure"),
    (["predict", "m.h5", "train.h5", "-o", "p.h5", "--index", "50:60"], "selects no structure"),
    (["evaluate", "m.h5", "train.h5", "--index", "99"], "out of range"),
    (["evaluate", "m.h5", "train.h5", "--window", "-1"], "--window must be > 0"),
    (["dos", "train.h5", "--erange", "5", "-5"], "EMIN < EMAX"),
    (["evaluate", "m.h5", "train.h5", "--index", "1:2:0"], "step must not be 0"),
])
def test_empty_selections_are_refused(w, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(w)
    with unchanged(w):
        rc, _, err = _run(argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err


def test_json_outputs_are_strict(w, capsys, monkeypatch):
    from acehamil.io.safe_write import dumps_strict

    assert _strict_loads(dumps_strict({"a": float("nan"), "b": [np.inf, np.float32(1.5)]})) == {"a": None, "b": [None, 1.5]}
    monkeypatch.chdir(w)
    rc, out, _ = _run(["evaluate", "m.h5", "train.h5", "--index", "0", "--window", "1e-9", "--kmesh", "1", "1", "1",
                       "--json"], capsys)
    assert rc == 0
    res = _strict_loads(out)  # an empty eigenvalue window gives null, never NaN
    assert res["eigenvalues"]["mae_meV"] is None or np.isfinite(res["eigenvalues"]["mae_meV"])
    rc, _, _ = _run(["fit", "fit.toml", "-o", "m2.h5", "--report", "r.json", "-q"], capsys)
    assert rc == 0
    _strict_loads((w / "r.json").read_text())


# ------------------------------------------------------------- 8. generate settings
def _fake_compute(atoms, state):
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    H, S = slater_koster(atoms, basis, cutoff=4.0)
    return StructureData(atoms, basis, H=(H,), S=S), None


def test_generate_refuses_other_settings_and_other_structures(tmp_path):
    from acehamil.io.generator import generate, perturbed_structures

    base = bulk("Si", "diamond", a=5.43)
    out = tmp_path / "g.h5"
    res = generate(perturbed_structures(base, 2, seed=0, prefix="g"), out, _fake_compute, progress=False,
                   settings={"seed": 0, "r_cut": 12.0})
    assert res["done"] == 2
    with unchanged(tmp_path):
        with pytest.raises(UserError, match="other settings .*r_cut: file 12.0, now 6.0"):
            generate(perturbed_structures(base, 3, seed=0, prefix="g"), out, _fake_compute, progress=False,
                     settings={"seed": 0, "r_cut": 6.0})
        with pytest.raises(UserError, match="differs from the planned one"):  # another seed, same names
            generate(perturbed_structures(base, 3, seed=1, prefix="g"), out, _fake_compute, progress=False)
    res = generate(perturbed_structures(base, 3, seed=0, prefix="g"), out, _fake_compute, progress=False,
                   settings={"seed": 0, "r_cut": 12.0})
    assert (res["done"], res["skipped"]) == (1, 2)


def test_generate_cli_needs_resume_for_an_existing_file(tmp_path, capsys):
    out = tmp_path / "g.h5"
    write_dataset(out, _structures(1))
    with unchanged(tmp_path):
        rc, _, err = _run(["generate", "pyscf", "--base", "si2", "--count", "1", "-o", out], capsys)
    assert rc == 2 and "--overwrite" in err


# ------------------------------------------------------------- 9. readers and checksums
def test_flipped_byte_in_positions_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, _structures(2))
    with h5py.File(path, "a") as f:
        pos = f["structures/000001/positions"]
        arr = pos[()]
        arr[3, 0] += 1.64
        pos[...] = arr
    with pytest.raises(UserError, match=r"structure 'si-1'\): checksum mismatch"):
        read_dataset(path)[1]
    assert read_dataset(path)[0].info["name"] == "si-0"  # the others still read


def test_files_without_checksums_still_read(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, _structures(1))
    with h5py.File(path, "a") as f:
        del f["structures/000000"].attrs["checksum"]
    assert read_dataset(path)[0].info["name"] == "si-0"


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["positions"].__setitem__((1, 0), np.nan), "position of atom 1 is not finite"),
    (lambda g: g["positions"].__setitem__(1, g["positions"][0]), "are 0 Å apart"),
    (lambda g: (g.__delitem__("cell"), g.create_dataset("cell", data=np.zeros((2, 3)))), "cell: expected shape (3x3)"),
    (lambda g: (g.__delitem__("numbers"), g.create_dataset("numbers", data=np.array(["a"] * 4, dtype="S1"))),
     "numbers: expected shape (N) of integers"),
])
def test_impossible_stored_data_are_refused_naming_the_field(tmp_path, edit, message):
    path = tmp_path / "d.h5"
    write_dataset(path, _structures(1))
    with h5py.File(path, "a") as f:
        edit(f["structures/000000"])
        del f["structures/000000"].attrs["checksum"]  # as if written before checksums
    with pytest.raises(UserError) as err:
        read_dataset(path)[0]
    assert message in str(err.value) and "structures/000000" in str(err.value)


def _aims_copy(shared_data, tmp_path):
    src = shared_data / "fhi-aims" / "water-dimer"
    dst = tmp_path / "aims"
    shutil.copytree(src, dst)
    return dst


def test_self_concatenated_rs_hamiltonian_is_not_two_spins(shared_data, tmp_path):
    from acehamil.io.fhi_aims import read_fhi_aims

    d = _aims_copy(shared_data, tmp_path)
    text = (d / "rs_hamiltonian.out").read_text()
    (d / "rs_hamiltonian.out").write_text(text + text)
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match="concatenated"):
            read_fhi_aims(d, prefer_hdf5=False)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace(" H\n", " X\n", 1), "unknown chemical species"),
    (lambda t: t.replace("atom 0.0000000000000000 0.7632390000000000 -0.4770470000000000 H",
                         "atom 0.0000000000000000 0.0000000000000000 0.1192620000000000 H", 1), "on top of each other"),
])
def test_impossible_geometry_in_is_refused(shared_data, tmp_path, capsys, edit, message):
    d = _aims_copy(shared_data, tmp_path)
    g = d / "geometry.in"
    g.write_text(edit(g.read_text()))
    with unchanged(tmp_path):
        rc, _, err = _run(["convert", d, "-o", tmp_path / "out.h5"], capsys)
    assert rc == 2 and message in err and "geometry.in" in err


# ------------------------------------------------------------- 10. bands --reference
def test_bands_reference_pairs_by_name(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    assert _run(["predict", "m.h5", "train.h5", "-o", "pred.h5", "--index", "2:", "-q"], capsys)[0] == 0
    rc, out, _ = _run(["bands", "pred.h5", "--reference", "train.h5", "--npoints", "5"], capsys)
    assert rc == 0 and "(absolute energies)" in out  # pred.h5 #0 is si-2, paired with train.h5 #2
    rc, out, _ = _run(["bands", "pred.h5", "--reference", "train.h5", "--npoints", "5", "--align", "fermi"], capsys)
    assert rc == 0 and "relative to its own Fermi level" in out
    write_dataset(w / "renamed.h5", _structures(1, seed=11, prefix="zz"))
    with unchanged(w):
        rc, _, err = _run(["bands", "pred.h5", "--reference", "renamed.h5", "--npoints", "5"], capsys)
    assert rc == 2 and "has no structure named 'si-2'" in err
    moved = _structures(3, seed=12)  # same names, other atoms
    write_dataset(w / "moved.h5", moved)
    with unchanged(w):
        rc, _, err = _run(["bands", "pred.h5", "--reference", "moved.h5", "--npoints", "5"], capsys)
    assert rc == 2 and "same name but other atoms" in err


# ------------------------------------------------------------- 11. honest S check
def test_model_predict_warns_about_a_non_positive_definite_s(ws):
    from ase.io import read

    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.model import OverlapWarning

    model = load_model(ws / "m.h5")
    with pytest.warns(OverlapWarning, match="not positive definite"):
        sd = model.predict_structure(read(ws / "tight.xyz"))
    assert sd.info["overlap_positive_definite"] is False and sd.info["overlap_min_eigenvalue"] < 0
    assert sd.info["overlap_kpoints_checked"] > 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = model.predict_structure(read(ws / "one.xyz"))
    assert good.info["overlap_positive_definite"] is True


def test_min_eig_is_the_minimum_over_the_k_points_checked(ws):
    from ase.io import read

    from acehamil.io.models import load_model
    from acehamil.tb.overlap import overlap_check, overlap_check_kpts

    model = load_model(ws / "m.h5")
    atoms = read(ws / "tight.xyz")
    _, S = model.predict(atoms)
    smin, kmin, nk = overlap_check(S, atoms)
    kpts = overlap_check_kpts(atoms, S.norb)
    assert nk == len(kpts)
    each = [overlap_check(S, atoms, kpts=[k])[0] for k in kpts]
    # kmin is a k-point where the minimum is reached (symmetry-equivalent k-points tie to rounding)
    at = [p for p, k in enumerate(kpts) if np.allclose(k, kmin)]
    assert smin == pytest.approx(min(each)) and len(at) == 1 and each[at[0]] == pytest.approx(min(each), rel=1e-12)


def test_predict_quiet_still_reports_a_bad_s(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    rc, out, err = _run(["predict", "m.h5", "tight.xyz", "-o", "p.h5", "-q"], capsys)
    assert rc == 0 and "WARNING" in err and "not positive definite" in err and "k-points checked" in err


# ------------------------------------------------------------- 12. any k list
def test_bands_plots_any_k_list(w, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(w)
    (w / "k.txt").write_text("0 0 0\n0.5 0 0\n0.1 0.2 0.3\n0.5 0.5 0.5\n")
    rc, _, err = _run(["bands", "train.h5", "--kpts", "k.txt", "-o", "k.png"], capsys)
    assert rc == 0, err
    assert (w / "k.png").stat().st_size > 0


def test_band_plot_lines_break_at_path_jumps(si_data):
    from acehamil.plotting import _axis
    from acehamil.tb.bands import band_path, path_from_kpts

    bp = band_path(si_data.atoms, "GX,LG", 40)
    kax = _axis(bp)
    assert len(kax.x) == len(bp.kpts) and len(kax.breaks) == 1 and len(kax.segments()) == 2
    k = np.array([[0.01, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0], [0.1, 0.3, 0.2], [0.1, 0.31, 0.2]])  # no labels
    kax = _axis(path_from_kpts(si_data.atoms, k))
    assert len(kax.x) == len(k) and kax.breaks == [4]


def test_bands_on_reference_k_points_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src = ROOT / "data" / "si8_szv.h5"
    if not src.exists():
        pytest.skip("data/si8_szv.h5 not shipped")
    rc, out, err = _run(["bands", src, "-o", tmp_path / "x.png"], capsys)
    assert rc == 0, err
    assert "absolute energies" not in out or "reference" in out


# ------------------------------------------------------------- 13. runaway sizes
def test_huge_max_degree_is_refused_before_building(w, capsys, monkeypatch):
    import time

    monkeypatch.chdir(w)
    (w / "big.toml").write_text(CONFIG.replace("max_degree = [8]", "max_degree = [1e9]", 1))
    t0 = time.perf_counter()
    with unchanged(w):
        rc, _, err = _run(["fit", "big.toml", "-o", "big.h5"], capsys)
    assert rc == 2 and "too large to build" in err and "one-particle" in err
    assert time.perf_counter() - t0 < 20


def test_large_builds_are_estimated_and_announced():
    import io

    from acehamil.basis.spec import BasisSpec, RadialSpec, check_size, count_products

    big = BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=4, max_degree=(20, 20, 20, 20), L_max=2)
    n_one, counts = count_products(big)
    assert 10_000 < sum(counts) < 100_000
    buf = io.StringIO()
    check_size(big, "test basis", stream=buf)
    assert "estimated" in buf.getvalue()
    huge = replace(big, radial=RadialSpec(n_max=12, r_cut=4.0), max_degree=(30, 30, 30, 30))
    with pytest.raises(ValueError, match="about .* products"):
        check_size(huge)


def test_huge_dos_grid_is_refused_with_an_estimate(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    with unchanged(w):
        rc, _, err = _run(["dos", "train.h5", "--kmesh", "1000", "1000", "1000"], capsys)
    assert rc == 2 and "GiB" in err


# ------------------------------------------------------------- 14. outputs first, streamed predictions
@pytest.mark.parametrize("argv", [
    ["fit", "fit.toml", "-o", "nodir/m.h5"],
    ["fit", "fit.toml", "-o", "ok.h5", "--report", "nodir/r.json"],
    ["predict", "m.h5", "train.h5", "-o", "nodir/p.h5"],
])
def test_unwritable_outputs_are_refused_before_the_work(w, capsys, argv, monkeypatch):
    monkeypatch.chdir(w)
    import acehamil.models.hamiltonian.fit as fitmod

    monkeypatch.setattr(fitmod, "fit", lambda *a, **k: pytest.fail("fit ran before the output check"))
    with unchanged(w):
        rc, _, err = _run(argv, capsys)
    assert rc == 2 and "nodir" in err and ".tmp" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_refused_naming_the_users_path(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    (w / "ro").mkdir()
    os.chmod(w / "ro", 0o555)
    try:
        rc, _, err = _run(["predict", "m.h5", "train.h5", "-o", "ro/p.h5"], capsys)
    finally:
        os.chmod(w / "ro", 0o755)
    assert rc == 2 and "ro/p.h5" in err and "not writable" in err


def test_a_failing_frame_keeps_the_good_ones_and_is_named(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    from acehamil.models.hamiltonian.model import HamiltonianModel

    real = HamiltonianModel.predict_structure

    def flaky(self, atoms, *args, **kw):
        if (kw.get("info") or {}).get("name") == "si-2":
            raise UserError("cannot predict this one")
        return real(self, atoms, *args, **kw)

    monkeypatch.setattr(HamiltonianModel, "predict_structure", flaky)
    rc, _, err = _run(["predict", "m.h5", "train.h5", "-o", "p.h5", "-q"], capsys)
    assert rc == 2 and "frame 2 (si-2) failed" in err and "cannot predict this one" in err
    assert read_dataset(w / "p.h5").names == ("si-0", "si-1")
    assert not [p for p in w.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------- 15. user errors vs bugs
@pytest.mark.parametrize("setup, argv, message", [
    (None, ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--index", "7"], "out of range"),
    ("empty", ["predict", "m.h5", "empty.xyz", "-o", "p.h5"], "is empty"),
    (None, ["evaluate-potential", "m.h5", "fit.toml"], "expected 'ace_potential'"),
    ("six", ["fit", "six.toml", "-o", "six.h5"], "[h_onsite] r_cut must be a number, got 'six'"),
    ("garbage", ["predict", "m.h5", "garbage.xyz", "-o", "p.h5"], "says 3 atoms, but only 1 lines follow"),
    (None, ["bands", "train.h5", "--kpts", "fit.toml"], "cannot read k-points"),
])
def test_user_errors_are_one_line_without_traceback(w, capsys, monkeypatch, setup, argv, message):
    monkeypatch.chdir(w)
    if setup == "empty":
        (w / "empty.xyz").write_text("")
    elif setup == "six":
        (w / "six.toml").write_text(CONFIG.replace("r_cut = 4.0", 'r_cut = "six"', 1))
    elif setup == "garbage":
        (w / "garbage.xyz").write_text("3\n\nthis is not xyz\n")
    with unchanged(w, new_ok={"empty.xyz", "six.toml", "garbage.xyz"}):
        rc, _, err = _run(argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_labelled_reader_refuses_a_toml(w):
    from acehamil.io.labelled import read_configs

    with pytest.raises(UserError, match="ASE cannot read labelled structures"):
        read_configs(w / "fit.toml")


def test_bugs_show_a_traceback_and_ask_for_a_report(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    import acehamil.cli.info as info

    def broken(path, **kw):
        return [][1]  # an internal bug: IndexError

    monkeypatch.setattr(info, "summary", broken)
    rc, _, err = _run(["info", "train.h5"], capsys)
    assert rc == 1 and "Traceback" in err and "IndexError" in err and "please report" in err


def test_value_errors_from_libraries_count_as_bugs():
    try:
        np.zeros(3)[:] = np.zeros(4)
    except ValueError as err:
        assert not is_user_error(err)
    try:
        read_dataset(Path("x"), bogus=1)  # a wrong call inside acehamil is a bug, not the user's
    except TypeError as err:
        assert not is_user_error(err)
    assert is_user_error(UserError("x"))
    assert is_user_error(PermissionError(13, "Permission denied", "f"))


# ------------------------------------------------------------- 16. modes, temporaries, messages
def test_new_files_respect_the_umask_and_replaced_files_keep_their_mode(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    old = os.umask(0o002)
    try:
        assert _run(["predict", "m.h5", "train.h5", "-o", "p.h5", "-q"], capsys)[0] == 0
        assert stat.S_IMODE(os.stat(w / "p.h5").st_mode) == 0o664
        os.chmod(w / "p.h5", 0o640)
        assert _run(["predict", "m.h5", "train.h5", "-o", "p.h5", "-q", "--overwrite"], capsys)[0] == 0
        assert stat.S_IMODE(os.stat(w / "p.h5").st_mode) == 0o640
        os.chmod(w / "train.h5", 0o664)
        append_dataset(w / "train.h5", _structures(1, seed=21, prefix="extra"))
        assert stat.S_IMODE(os.stat(w / "train.h5").st_mode) == 0o664
    finally:
        os.umask(old)


def test_json_writes_use_unique_temporaries(tmp_path, monkeypatch):
    import acehamil.io.safe_write as sw

    seen = []
    real = sw._temp_in

    def spy(path):
        t = real(path)
        seen.append(t)
        return t

    monkeypatch.setattr(sw, "_temp_in", spy)
    sw.atomic_write_text(tmp_path / "a.json", "{}")
    sw.atomic_write_text(tmp_path / "a.json", "[]")
    assert len(set(seen)) == 2 and all(not s.endswith("a.json.tmp") or Path(s).name != "a.json.tmp" for s in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_nan_positions_in_predict_name_the_frame(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    at.positions[2, 1] = np.nan
    write(w / "nan.xyz", [at.copy(), at])
    with unchanged(w, new_ok={"nan.xyz"}):
        rc, _, err = _run(["predict", "m.h5", "nan.xyz", "-o", "p.h5"], capsys)
    assert rc == 2 and "nan.xyz:0" in err and "atom 2 is not finite" in err


def test_model_data_basis_mismatch_is_named(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    basis = OrbitalBasis.from_dict({14: [(3, 0)]})
    at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    H, S = slater_koster(at, basis, cutoff=4.0)
    write_dataset(w / "sonly.h5", [StructureData(at, basis, H=(H,), S=S, n_electrons=8.0, info={"name": "s"})])
    with unchanged(w):
        rc, _, err = _run(["evaluate", "m.h5", "sonly.h5"], capsys)
    assert rc == 2 and "basis mismatch" in err and "Si" in err


def test_overlap_error_through_the_cli_names_the_remedy_option(w, capsys, monkeypatch):
    monkeypatch.chdir(w)
    assert _run(["predict", "m.h5", "tight.xyz", "-o", "bad.h5", "-q"], capsys)[0] == 0
    with unchanged(w):
        rc, _, err = _run(["bands", "bad.h5", "--npoints", "5"], capsys)
    assert rc == 2 and "--remedy project" in err and "solve(" not in err
