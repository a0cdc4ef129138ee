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

__all__ = ["plot_bands", "plot_levels", "plot_dos", "save_figure", "FORMATS"]

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


def _axis(result):
    """KAxis of a BandsResult (or of a bare BandPath)."""
    from .tb.kpath import linear_axis

    return result.axis if hasattr(result, "axis") else linear_axis(result)


def _lines(ax, x, y, segments, **kw):
    """Plot the columns of ``y (nk, nb)`` against ``x``, one line per continuous path segment."""
    label = kw.pop("label", None)
    y = np.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    for sl in segments:
        for n in range(y.shape[1]):
            ax.plot(x[sl], y[sl, n], label=label, **kw)
            label = None


def plot_bands(result, emin: float | None = -10.0, emax: float | None = 6.0, label: str = "model",
               reference_label: str = "reference", title: str | None = None, error_panel: bool = True, sigma=None):
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
    sigma : array, shape (nk, nbands), eV, optional
        Standard deviation of each band (first spin channel): ``+-2 sigma`` is shaded.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not getattr(result, "periodic", True):
        return plot_levels(result, emin=emin, emax=emax, label=label, reference_label=reference_label, title=title)
    kax = _axis(result)
    x, ticks, names, segs = kax.x, kax.ticks, kax.labels, kax.segments()
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
        _lines(ax, x, eps[s], segs, color="C0" if s == 0 else "C3", lw=1.2, ls=styles[s % 2],
               label=label + (f" (spin {s})" if eps.shape[0] == 2 else ""))
    if getattr(result, "weights", None):
        # fat bands: marker area proportional to the Mulliken weight of each orbital group (spin 0)
        for q, (lab, w) in enumerate(result.weights.items()):
            xx = np.broadcast_to(x[:, None], eps[0].shape)
            ax.scatter(xx.ravel(), eps[0].ravel(), s=40.0 * np.clip(w[0], 0, 1).ravel(), color=f"C{(q + 1) % 10}",
                       alpha=0.45, lw=0, label=lab)
    if sigma is not None:
        sg = np.asarray(sigma, dtype=float)
        label_s = "±2σ"
        for sl in segs:
            for n in range(min(eps.shape[2], sg.shape[1])):
                ax.fill_between(x[sl], eps[0, sl, n] - 2 * sg[sl, n], eps[0, sl, n] + 2 * sg[sl, n], color="C0",
                                alpha=0.25, lw=0, label=label_s)
                label_s = None
    if ref is not None:
        for s in range(ref.shape[0]):
            for n in range(ref.shape[2]):
                ax.plot(x, ref[s, :, n], color="k", lw=0.0, marker="o", ms=2.0, alpha=0.7,
                        label=reference_label if (n == 0 and s == 0) else None)
    ax.set_ylim(lo, hi)
    ax.set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1)
    ax.set_ylabel("E - E_F (eV)" if ef is not None else "E (eV)")
    if ef is not None:
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
    for t in ticks:
        ax.axvline(t, color="0.7", lw=0.6)
    for q in kax.breaks:
        ax.axvline(x[q], color="0.3", lw=1.2)
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
        _lines(axe, x, err, segs, color="C1", lw=1.2)
        axe.set_ylabel("|Δε| (meV)")
        axe.set_ylim(0, max(err.max() * 1.15, 1e-3))
        for t in ticks:
            axe.axvline(t, color="0.7", lw=0.6)
        axe.text(0.01, 0.85, f"max {err.max():.3g} meV in window", transform=axe.transAxes, fontsize=8)
        bottom = axe
    bottom.set_xticks(ticks)
    bottom.set_xticklabels(names)
    return fig


def plot_levels(result, emin: float | None = -10.0, emax: float | None = 6.0, label: str = "model",
                reference_label: str = "reference", title: str | None = None):
    """Energy-level diagram of a molecule or cluster (one k-point): one line per level.

    Occupied levels (below E_F) are drawn solid, empty ones dashed; HOMO and LUMO are labelled
    when the electron count is known.  A reference (e.g. the DFT code's own levels) is drawn in a
    second column.

    Parameters
    ----------
    result : acehamil.tb.bands.BandsResult
        With one k-point.
    emin, emax : float or None
        Window in eV relative to E_F (absolute when unknown); None for all levels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ef = result.fermi_level
    shift = ef if ef is not None else 0.0
    cols = [(label, result.energies[:, 0, :] - shift)]
    if result.reference is not None:
        cols.append((reference_label, result.reference[:, 0, :] - shift))
    fig = _figure((1.8 + 1.6 * len(cols), 4.8))
    ax = fig.subplots(1, 1)
    allv = np.concatenate([c.ravel() for _, c in cols])
    lo = allv.min() - 0.5 if emin is None else emin
    hi = allv.max() + 0.5 if emax is None else emax
    nocc = None
    if result.n_electrons is not None and result.energies.shape[0] == 1:
        nocc = int(np.ceil(result.n_electrons / 2 - 1e-9))
    for c, (name, lev) in enumerate(cols):
        for s in range(lev.shape[0]):
            for n, e in enumerate(lev[s]):
                occupied = (n < nocc) if nocc is not None else (ef is not None and e <= 0.0)
                x0 = c + 0.1 + 0.4 * s * (lev.shape[0] > 1)
                ax.plot([x0, x0 + (0.8 if lev.shape[0] == 1 else 0.4)], [e, e], color="C0" if c == 0 else "k",
                        lw=1.4, ls="-" if occupied else "--")
        if nocc is not None and 0 < nocc < lev.shape[1] and c == 0:
            for n, tag in ((nocc - 1, "HOMO"), (nocc, "LUMO")):
                if lo <= lev[0, n] <= hi:
                    ax.text(c + 0.92, lev[0, n], tag, fontsize=7, va="center")
    ax.set_xticks([c + 0.5 for c in range(len(cols))])
    ax.set_xticklabels([name for name, _ in cols], fontsize=8)
    ax.set_xlim(0, len(cols) + 0.15)
    ax.set_ylim(lo, hi)
    if ef is not None:
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
    ax.set_ylabel("E - E_F (eV)" if ef is not None else "E (eV)")
    gap = result.gap
    ax.set_title(title or ("levels" + (f", HOMO-LUMO gap {gap.gap:.3f} eV" if gap is not None and gap.gap > 0 else "")),
                 fontsize=9)
    return fig


def plot_dos(result, emin: float | None = None, emax: float | None = None, title: str | None = None,
             reference=None, reference_label: str = "reference", spread=None):
    """DOS (filled) with the Mulliken PDOS as lines.

    Parameters
    ----------
    result : acehamil.tb.dos.DOSResult
    emin, emax : float or None
        Window in eV relative to the Fermi level (absolute when unknown).
    reference : tuple (energies (ne,), dos (ne,)), optional
        A reference DOS in the same (absolute) energies, drawn dashed.
    spread : array, shape (ne,), optional
        Standard deviation of the DOS (posterior draws): ``+-2 spread`` is shaded.

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
    if spread is not None:
        sp = np.asarray(spread, dtype=float)
        ax.fill_between(e, np.clip(result.dos - 2 * sp, 0, None), result.dos + 2 * sp, color="C0", alpha=0.35, lw=0,
                        label="±2σ")
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
    if title is None and hasattr(result, "n_moments"):  # a KPMResult has no smearing: every KPM plot was an AttributeError
        title = f"KPM, {result.n_moments} moments ({result.kernel}), {len(result.kpts)} k-points"
    ax.set_title(title or f"{result.smearing} smearing {result.width:g} eV, {len(result.kpts)} k-points")
    return fig
