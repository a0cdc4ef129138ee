"""Figures of band structures and densities of states (the only module that imports matplotlib).

matplotlib is imported lazily inside the functions and figures are drawn on
an Agg canvas created for each figure (no pyplot, no global backend switch),
so importing acehamil never needs matplotlib and nothing here touches global
state.  Files are written as PNG or PDF, chosen by the suffix.

Examples
--------
>>> import numpy as np, os, tempfile
>>> from acehamil.tb.dos import DOSResult
>>> e = np.linspace(-1, 1, 11)
>>> res = DOSResult(e, np.ones(11), 0.0, None, np.zeros((1, 1, 1)), np.zeros((1, 3)), np.ones(1), 2, 0.1, "gaussian")
>>> path = os.path.join(tempfile.mkdtemp(), "dos.png")
>>> save_figure(plot_dos(res), path)
>>> os.path.getsize(path) > 0
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_bands", "plot_dos", "save_figure", "FORMATS"]

FORMATS = (".png", ".pdf")


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi: int = 150) -> None:
    """Write ``fig`` to ``path`` (``.png`` or ``.pdf``)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"figure file must end in one of {FORMATS}, got {path.name!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist")
    fig.savefig(path, dpi=dpi, format=path.suffix.lower()[1:])


def _axis(path):
    """x coordinates (nk,), tick positions and labels (merged at path joins) of a BandPath, and the
    indices ``b`` where the path jumps (no line is drawn between k-points ``b-1`` and ``b``).

    ASE's linear axis is used when it fits the k-points; otherwise (any k list, e.g. a DFT
    code's band k-points) x is the cumulative Cartesian distance, with a step more than
    4 times the median step (or a repeated point) treated as a jump of zero length.
    """
    k = np.asarray(path.kpts, dtype=float).reshape(-1, 3)
    nk = len(k)
    try:
        x, xs, labels = path.get_linear_kpoint_axis()
        x = np.asarray(x, dtype=float)
    except Exception:  # noqa: BLE001 - ASE cannot make an axis of this k list: ours below
        x, xs, labels = np.zeros(0), [], []
    if len(x) == nk:
        dx = np.diff(x)
        dk = np.abs(np.diff(k, axis=0)).sum(axis=1) if nk > 1 else np.zeros(0)
        breaks = [b + 1 for b in np.nonzero((np.abs(dx) < 1e-12) & (dk > 1e-9))[0]]
    else:
        try:
            rec = np.asarray(path.cell.reciprocal(), dtype=float)
            kc = k @ rec
        except Exception:  # noqa: BLE001 - no usable cell: fractional distances
            kc = k
        step = np.linalg.norm(np.diff(kc, axis=0), axis=1) if nk > 1 else np.zeros(0)
        pos = step[step > 1e-12]
        typical = float(np.median(pos)) if len(pos) else 0.0
        jump = (step > 4 * typical) if (len(pos) >= 3 and typical > 0) else np.zeros(len(step), bool)
        breaks = [int(b) + 1 for b in np.nonzero(jump)[0]]
        step = np.where(jump, 0.0, step)
        x = np.concatenate([[0.0], np.cumsum(step)])
        xs, labels = [], []
        special = dict(getattr(path, "special_points", {}) or {})
        for q in range(nk):
            for name, sp in special.items():
                if np.abs(np.asarray(sp, dtype=float) - k[q]).sum() < 1e-6:
                    xs.append(x[q])
                    labels.append(name)
                    break
    ticks, names = [], []
    for pos, lab in zip(xs, labels):
        lab = "Γ" if lab == "G" else lab
        if ticks and abs(pos - ticks[-1]) < 1e-9:
            if lab != names[-1]:
                names[-1] = f"{names[-1]}|{lab}"
            continue
        ticks.append(pos)
        names.append(lab)
    return x, ticks, names, breaks


def _broken(x, y, breaks):
    """``x``, ``y`` (first axis k) with NaN inserted at the jumps, so a line does not bridge them."""
    if not breaks:
        return x, y
    return np.insert(x, breaks, np.nan), np.insert(np.asarray(y, dtype=float), breaks, np.nan, axis=0)


def plot_bands(result, emin: float | None = -10.0, emax: float | None = 6.0, label: str = "model",
               reference_label: str = "reference", title: str | None = None, error_panel: bool = True):
    """Band structure, optionally with a reference overlaid and an error panel.

    Parameters
    ----------
    result : acehamil.tb.bands.BandsResult
        Energies (eV); ``result.reference`` (same k-points) is overlaid when present.
    emin, emax : float or None
        Energy window in eV relative to the Fermi level (absolute when it is
        unknown); None for the full range.
    label, reference_label : str
        Legend entries.
    error_panel : bool
        With a reference: a lower panel with ``max_n |model - reference|``
        (meV) over the bands inside the window at each k.

    Returns
    -------
    matplotlib.figure.Figure
    """
    x, ticks, names, breaks = _axis(result.path)
    ef = result.fermi_level
    shift = ef if ef is not None else 0.0
    eps = result.energies - shift
    ref = None if result.reference is None else result.reference - shift
    with_err = ref is not None and error_panel
    fig = _figure((6.4, 6.4 if with_err else 4.8))
    if with_err:
        ax, axe = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, axe = fig.subplots(1, 1), None
    lo = eps.min() if emin is None else emin
    hi = eps.max() if emax is None else emax
    styles = ("-", "--")
    for s in range(eps.shape[0]):
        for n in range(eps.shape[2]):
            ax.plot(*_broken(x, eps[s, :, n], breaks), color="C0" if s == 0 else "C3", lw=1.2, ls=styles[s % 2],
                    label=(label + (f" (spin {s})" if eps.shape[0] == 2 else "")) if n == 0 else None)
    if ref is not None:
        for s in range(ref.shape[0]):
            for n in range(ref.shape[2]):
                ax.plot(x, ref[s, :, n], color="k", lw=0.0, marker="o", ms=2.0, alpha=0.7,
                        label=reference_label if (n == 0 and s == 0) else None)
    ax.set_ylim(lo, hi)
    ax.set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1)
    for b in breaks:
        ax.axvline(x[b], color="0.3", lw=0.9)
    ax.set_ylabel("E - E_F (eV)" if ef is not None else "E (eV)")
    if ef is not None:
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
    for t in ticks:
        ax.axvline(t, color="0.7", lw=0.6)
    if result.gap is not None and result.gap.gap > 0:
        ax.text(0.01, 0.01, f"gap {result.gap.gap:.3f} eV", transform=ax.transAxes, fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    bottom = ax
    if with_err:
        nb = min(eps.shape[2], ref.shape[2])
        ns = min(eps.shape[0], ref.shape[0])
        diff = np.abs(eps[:ns, :, :nb] - ref[:ns, :, :nb])
        inside = (ref[:ns, :, :nb] >= lo) & (ref[:ns, :, :nb] <= hi)
        err = np.where(inside, diff, 0.0).max(axis=(0, 2)) * 1e3
        axe.plot(*_broken(x, err, breaks), color="C1", lw=1.2)
        axe.set_ylabel("|Δε| (meV)")
        axe.set_ylim(0, max(err.max() * 1.15, 1e-3))
        for t in ticks:
            axe.axvline(t, color="0.7", lw=0.6)
        axe.text(0.01, 0.85, f"max {err.max():.3g} meV in window", transform=axe.transAxes, fontsize=8)
        bottom = axe
    bottom.set_xticks(ticks)
    bottom.set_xticklabels(names)
    return fig


def plot_dos(result, emin: float | None = None, emax: float | None = None, title: str | None = None,
             reference=None, reference_label: str = "reference"):
    """DOS (filled) with the Mulliken PDOS as lines.

    Parameters
    ----------
    result : acehamil.tb.dos.DOSResult
    emin, emax : float or None
        Window in eV relative to the Fermi level (absolute when unknown).
    reference : tuple (energies (ne,), dos (ne,)), optional
        A reference DOS in the same (absolute) energies, drawn dashed.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ef = result.fermi_level
    shift = ef if ef is not None else 0.0
    e = result.energies - shift
    fig = _figure((6.4, 4.2))
    ax = fig.subplots(1, 1)
    ax.fill_between(e, result.dos, color="0.8", label="DOS")
    ax.plot(e, result.dos, color="k", lw=0.8)
    if result.pdos:
        for n, (lab, v) in enumerate(result.pdos.items()):
            ax.plot(e, v, lw=1.0, color=f"C{n % 10}", label=lab)
    if reference is not None:
        re, rd = (np.asarray(a, dtype=float) for a in reference)
        ax.plot(re - shift, rd, color="C3", lw=1.0, ls="--", label=reference_label)
    if ef is not None:
        ax.axvline(0.0, color="0.4", lw=0.8, ls=":")
    lo, hi = (e[0] if emin is None else emin), (e[-1] if emax is None else emax)
    ax.set_xlim(lo, hi)
    inside = (e >= lo) & (e <= hi)
    top = float(result.dos[inside].max()) if inside.any() else float(result.dos.max())
    ax.set_ylim(0, 1.08 * top if top > 0 else 1.0)
    ax.set_xlabel("E - E_F (eV)" if ef is not None else "E (eV)")
    ax.set_ylabel("states / eV / cell")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{result.smearing} smearing {result.width:g} eV, {len(result.kpts)} k-points")
    return fig
