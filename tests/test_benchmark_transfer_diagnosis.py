"""benchmarks/transfer_diagnosis.py --onsite-variants refits the on-site H blocks of each variant from the
training structures (with the full fit's energy zeros) and prints their on-site errors per probe file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from sk_si import FIT_TOML

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
transfer_diagnosis = pytest.importorskip("transfer_diagnosis")

TOML = FIT_TOML + "\n[fit]\nfit_energy_zero = true\n"  # the fault tests' tiny fit, with energy zeros


def test_onsite_variants_refit_the_onsite_blocks_per_variant(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TOML)
    data = ROOT / "data" / "si8_szv.h5"
    rc = transfer_diagnosis.main(["--config", str(config), "--train", f"{data}:0-3", "--probe", f"{data}:4-5",
                                  "--onsite-variants", "{}", '{"h_onsite": {"max_degree": [3]}}'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "on-site coefficients" in line]
    assert rc == 0 and len(rows) == 2, out
    assert all("si8_szv: s " in row and row.endswith("meV rms") for row in rows), rows
    n_coef = [int(re.search(r"(\d+) on-site coefficients", row).group(1)) for row in rows]
    assert n_coef[1] < n_coef[0]  # the lower degree has fewer on-site features
