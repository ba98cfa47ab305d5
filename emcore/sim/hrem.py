"""HRTEM phantom of a faceted Pt nanoparticle on CeO2 (Mohan et al. 2022), and the HRTEM example.

The phantom is a cheap stand-in for multislice simulation: it reproduces what a denoiser sees
(lattice periods, contrast, shapes, dose statistics), not a quantitative image.

References
----------
.. [Mohan2022] Mohan, S., Manzorro, R., Vincent, J. L., Tang, B., Sheth, D. Y., Simoncelli,
   E. P., Matteson, D. S., Crozier, P. A., Fernandez-Granda, C. "Deep denoising for scientific
   discovery: a case study in electron microscopy", IEEE Trans. Comput. Imaging 8 (2022)
   585–597. (Pt nanoparticles on CeO2 imaged at 300 kV and ~0.45 e⁻/px.)
.. [Kirkland2010] Kirkland, E. J. *Advanced Computing in Electron Microscopy*, 2nd ed.,
   Springer (2010): Ch. 2 (relativistic electron wavelength), Ch. 3 (aberration phase
   χ(k), weak-phase-object image, focal-spread envelope, delocalisation).
.. [Jia2004] Jia, C. L., Lentzen, M., Urban, K. "High-resolution transmission electron
   microscopy using negative spherical aberration", Microsc. Microanal. 10 (2004) 174–184.
.. [Wyckoff1963] Wyckoff, R. W. G. *Crystal Structures*, Vol. 1, 2nd ed. (1963): lattice
   constants Pt a = 0.39242 nm (fcc), CeO2 a = 0.5411 nm (fluorite).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft

from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError
from emcore.noise.models import Poisson
from emcore.sim.common import (
    _check_int,
    _check_range,
    _make_rng,
    _seed_meta,
    _SmoothField,
)

# =====================================================================================
# HRTEM phantom
# =====================================================================================

HREM_VOLTAGE_KV = 300.0  # Mohan et al. (2022) imaged Pt/CeO2 at 300 kV
_PT_A_NM = 0.39242  # fcc Pt lattice constant (Wyckoff 1963)
_CEO2_A_NM = 0.5411  # fluorite CeO2 lattice constant (Wyckoff 1963)
# In a [110] projection of an fcc lattice the nearest columns are a*sqrt(3/8) apart
# (0.240 nm for Pt, 0.331 nm for Ce), 70.5° between the two nearest-neighbour directions.
_FCC110_NN = math.sqrt(3 / 8)
# Pixel size of the reference multislice images of Mohan et al. (shared/data/hrem): Pt columns
# 50.0 px and Ce columns 66–68 px apart, i.e. 0.240/50 = 0.0048 and 0.331/67 = 0.0049 nm/px.
REFERENCE_PIXEL_NM = 0.0049
# Relative column strengths. The rule of thumb of a projected atomic potential growing
# about as Z^0.7 gives Pt (78) : Ce (58) : O (8) ≈ 1 : 0.8 : 0.2 per atom; Ce and O are
# raised here so that the support is as strong as in the reference images (its columns
# are longer — the support is thicker than the particle).
_W_PT, _W_CE, _W_O = 1.0, 1.4, 0.35
# Objective lens of a Cs-corrected 300 kV microscope: a small negative Cs (as in NCSI imaging,
# Jia et al. 2004), 4 nm focal spread (Kirkland 2010, Ch. 3 envelope) and a 0.05 nm
# Gaussian width per column (thermal vibration plus the width of the projected potential).
_CS_NM = -15e3
_FOCAL_SPREAD_NM = 4.0
_COLUMN_SIGMA_NM = 0.05
_K2_CUTOFF = 20.0**2  # 1/nm²
_AMPLITUDE_CONTRAST = 0.2  # fraction of absorptive contrast added to the phase contrast
# Defocus ranges (nm) for the three contrast regimes with the χ sign convention used here
# (positive defocus: sin χ > 0 over the passband, so columns are bright on a dark halo).
_CONTRAST_DEFOCUS = {
    "bright": (10.0, 15.0),
    "dark": (-14.0, -6.0),
    "ring": (21.0, 25.0),
}
CONTRAST_MODES = tuple(_CONTRAST_DEFOCUS)
# Rotations of the CeO2 [110] frame relative to its surface: {111} rows along the surface
# ([001] at ±35.3° to it) or a (001) surface ([001] along the normal).
_SUPPORT_SURFACES = (-math.atan(math.sqrt(0.5)), math.atan(math.sqrt(0.5)), -math.pi / 2)


def electron_wavelength_nm(voltage_kv: float) -> float:
    """Relativistic electron wavelength in nm (Kirkland 2010, Ch. 2): 1.9687 pm at 300 kV."""
    v = voltage_kv * 1e3
    return 1.226426 / math.sqrt(v * (1 + 0.9784753725e-6 * v))


def _lattice_points(b1, b2, origin, lo, hi) -> np.ndarray:
    """All points ``origin + i*b1 + j*b2`` (row, col) inside the box ``lo <= p < hi``."""
    basis = np.column_stack([b1, b2])
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]]) - origin
    frac = np.linalg.solve(basis, corners.T).T
    i0, j0 = np.floor(frac.min(axis=0)).astype(int)
    i1, j1 = np.ceil(frac.max(axis=0)).astype(int)
    i, j = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
    p = origin + i.reshape(-1, 1) * b1 + j.reshape(-1, 1) * b2
    return p[np.all((p >= lo) & (p < hi), axis=1)]


def _fcc110_basis(a_px: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primitive vectors of an fcc [110] projection and the unit [001] direction, (row, col).

    In the projection frame (u along [1-10], v along [001]) the primitive vectors are
    (±a/(2√2), a/2); the whole frame is rotated by ``angle``.
    """
    c, s = math.cos(angle), math.sin(angle)

    def rot(u, v):  # (u, v) → (row, col)
        return np.array([u * s + v * c, u * c - v * s])

    b1 = rot(a_px / (2 * math.sqrt(2)), a_px / 2)
    b2 = rot(-a_px / (2 * math.sqrt(2)), a_px / 2)
    return b1, b2, rot(0.0, 1.0)


def _saturate(t: np.ndarray) -> np.ndarray:
    """Column strength vs relative thickness ``t`` in [0, 1].

    HRTEM column contrast grows sub-linearly with thickness (dynamical channelling), so the
    rim of a particle is dimmer but not vanishing, as in the reference simulations.
    """
    t0 = 0.45
    return (1 - np.exp(-t / t0)) / (1 - math.exp(-1 / t0))


def _splat(shape: tuple[int, int], points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinear splat of weighted sub-pixel deltas at (row, col) ``points`` onto a grid."""
    h, w = shape
    r0 = np.floor(points[:, 0]).astype(np.int64)
    c0 = np.floor(points[:, 1]).astype(np.int64)
    ok = (r0 >= 0) & (c0 >= 0) & (r0 < h - 1) & (c0 < w - 1)
    r0, c0, wt = r0[ok], c0[ok], weights[ok]
    fr = points[ok, 0] - r0
    fc = points[ok, 1] - c0
    idx = r0 * w + c0
    flat = np.bincount(idx, wt * (1 - fr) * (1 - fc), minlength=h * w)
    flat += np.bincount(idx + 1, wt * (1 - fr) * fc, minlength=h * w)
    flat += np.bincount(idx + w, wt * fr * (1 - fc), minlength=h * w)
    flat += np.bincount(idx + w + 1, wt * fr * fc, minlength=h * w)
    return flat.reshape(h, w)


def _transfer(k2: np.ndarray, defocus_nm: float, lam: float) -> np.ndarray:
    """Contrast transfer at squared spatial frequency ``k2`` (1/nm²) for one column.

    Weak-phase-object image (Kirkland 2010, Ch. 3): contrast ∝ sin χ for the phase part
    minus a small cos χ absorptive part, with the aberration phase
    χ = π λ Δf k² + ½ π Cs λ³ k⁴, times the Gaussian column profile and the focal-spread
    envelope exp(−½ (π λ Δ k²)²). The sign convention is chosen so that positive defocus
    gives bright columns.
    """
    k2 = np.asarray(k2, float)
    out = np.zeros(k2.shape)
    # Beyond ~20 nm⁻¹ the envelopes are below 1e-12: skip those frequencies (most of a
    # finely sampled grid, and the costly large-argument sines).
    band = k2 < _K2_CUTOFF
    kb = k2[band]
    chi = np.pi * lam * defocus_nm * kb + 0.5 * np.pi * _CS_NM * lam**3 * kb**2
    envelope = np.exp(-2 * np.pi**2 * _COLUMN_SIGMA_NM**2 * kb - 0.5 * (np.pi * lam * _FOCAL_SPREAD_NM * kb) ** 2)
    out[band] = (np.sin(chi) - _AMPLITUDE_CONTRAST * np.cos(chi)) * envelope
    return out


def _lattice_swing(b1, b2, defocus_nm: float, lam: float, pixel: float, basis=((0.0, 0.0, 1.0),)) -> float:
    """Largest |contrast| of an infinite lattice with primitive vectors b1, b2 (px).

    ``basis`` lists (row, col, weight) of the columns in one cell. The image of a lattice is
    the sum over its reciprocal vectors g of F(g) T(g) e^{2πi g·r} / A (F: structure factor,
    A: cell area), evaluated here on a grid over one unit cell.
    """
    recip = np.linalg.inv(np.column_stack([b1, b2]))  # rows: g1, g2 in 1/px
    n = 8  # reflections up to ±8 g, then only those inside the transfer band
    h, k = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    g = h.reshape(-1, 1) * recip[0] + k.reshape(-1, 1) * recip[1]
    g = g[(g**2).sum(axis=1) / pixel**2 < _K2_CUTOFF]  # the others transfer nothing
    basis = np.asarray(basis, float)
    structure = np.exp(-2j * np.pi * g @ basis[:, :2].T) @ basis[:, 2]
    amp = structure * _transfer((g**2).sum(axis=1) / pixel**2, defocus_nm, lam) / abs(np.linalg.det(np.column_stack([b1, b2])))
    f = (np.arange(16) + 0.5) / 16
    fu, fv = np.meshgrid(f, f, indexing="ij")
    r = fu.reshape(-1, 1) * b1 + fv.reshape(-1, 1) * b2
    phase = np.mod(r @ g.T, 1.0)  # small arguments keep the complex exponential fast
    image = np.real(np.exp(2j * np.pi * phase) @ amp)
    return float(np.abs(image).max()) or 1.0


def _resolve_shape(shape) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape, shape)
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise EmcoreError(f"The phantom shape must be (rows, cols), not {shape!r}.") from None
    if not (16 <= h <= 4096 and 16 <= w <= 4096):
        raise EmcoreError(f"The phantom shape must be between 16 and 4096 pixels per side; got {(h, w)}.")
    return h, w


def _hrem_render(
    shape,
    rng,
    *,
    shifts: np.ndarray | None = None,
    contrast: str | None = None,
    defocus_nm: float | None = None,
    defocus_variation_nm: float | None = None,
    pixel_size_nm: float | None = None,
    radius_nm: tuple[float, float] = (0.6, 1.2),
    defect_rate: float | None = None,
    thickness_variation: float | None = None,
    support_fraction: float | None = None,
    vacuum: float | None = None,
    contrast_amplitude: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Render the HRTEM phantom (see :func:`hrem_phantom`), optionally at several drifts.

    Returns ``(image, params)`` where ``image`` is ``(H, W)``, or ``(T, H, W)`` when ``shifts``
    (T, 2) are given: frame ``t`` shows the specimen moved by ``shifts[t]`` (row, col) pixels.
    """
    h, w = _resolve_shape(shape)
    rng = _make_rng(rng)

    # Every random default is drawn, used or not, in a fixed order: changing one option
    # (e.g. the contrast mode) then leaves the rest of the phantom as it was.
    d_pixel = math.exp(rng.uniform(math.log(0.9), math.log(1.1))) * REFERENCE_PIXEL_NM
    d_mode = CONTRAST_MODES[int(rng.integers(len(CONTRAST_MODES)))]
    d_focus_u = rng.uniform()
    d_focus_var = rng.uniform(0.0, 1.5)
    d_defects = rng.uniform(0.0, 0.15)
    d_thick_var = rng.uniform(0.05, 0.25)
    d_support = rng.uniform(0.2, 0.4)
    d_vacuum = rng.uniform(0.43, 0.47)
    d_amp = rng.uniform(0.13, 0.18)
    u_radius = rng.uniform()
    theta = rng.uniform(0, 2 * np.pi)  # direction of the support's surface normal
    # The support shows a low-index surface: a {111} row (either of the two) parallel to it,
    # as in the reference images, or a (001) surface; then a few degrees of miscut.
    support_angle = rng.uniform(-0.1, 0.1) + _SUPPORT_SURFACES[int(rng.integers(len(_SUPPORT_SURFACES)))]
    particle_angle = rng.uniform(0, 2 * np.pi)
    lateral_u, height_u = rng.uniform(-1, 1), rng.uniform(0.25, 0.7)
    facet_u = rng.uniform(size=8)
    origin_u = rng.uniform(size=4)
    thick_field = _SmoothField(rng, max(h, w))
    focus_field = _SmoothField(rng, max(h, w))
    edge_field = _SmoothField(rng, max(h, w), n_waves=3, max_cycles=3.0)

    pixel = d_pixel if pixel_size_nm is None else _check_range(pixel_size_nm, 0.001, 0.05, "pixel size", "nm")
    if contrast is not None and contrast not in _CONTRAST_DEFOCUS:
        raise EmcoreError(f"Unknown contrast mode {contrast!r}; choose one of {', '.join(CONTRAST_MODES)}.")
    mode = contrast or d_mode
    lo, hi = _CONTRAST_DEFOCUS[mode]
    focus = lo + d_focus_u * (hi - lo) if defocus_nm is None else _check_range(defocus_nm, -200, 200, "defocus", "nm")
    focus_var = d_focus_var if defocus_variation_nm is None else _check_range(defocus_variation_nm, 0, 20, "defocus variation", "nm")
    defects = d_defects if defect_rate is None else _check_range(defect_rate, 0, 1, "surface defect rate")
    thick_var = d_thick_var if thickness_variation is None else _check_range(thickness_variation, 0, 0.9, "thickness variation")
    support = d_support if support_fraction is None else _check_range(support_fraction, 0, 0.9, "support fraction")
    vac = d_vacuum if vacuum is None else _check_range(vacuum, 0.05, 0.95, "vacuum level")
    amp = d_amp if contrast_amplitude is None else _check_range(contrast_amplitude, 0, 0.5, "contrast amplitude")
    try:
        r_lo, r_hi = (float(r) for r in radius_nm)
    except (TypeError, ValueError):
        raise EmcoreError(f"The particle radius range must be two numbers in nm, not {radius_nm!r}.") from None
    if not (0 < r_lo <= r_hi < 100):
        raise EmcoreError(f"The particle radius range must satisfy 0 < min ≤ max (nm); got {radius_nm!r}.")

    lam = electron_wavelength_nm(HREM_VOLTAGE_KV)
    nn_pt = _PT_A_NM * _FCC110_NN / pixel  # px
    nn_ce = _CEO2_A_NM * _FCC110_NN / pixel
    # Delocalisation of the image of a column, λ|Δf|k + |Cs|λ³k³ at the info limit (Kirkland
    # 2010, Ch. 3): the padding keeps FFT wrap-around and truncated columns out of the field.
    k_info = 1 / 0.1  # 1/nm
    deloc_nm = lam * (abs(focus) + focus_var) * k_info + abs(_CS_NM) * lam**3 * k_info**3
    max_shift = 0.0 if shifts is None else float(np.abs(shifts).max())
    pad = int(math.ceil(deloc_nm / pixel + 4 * _COLUMN_SIGMA_NM / pixel + max_shift)) + 8
    hp, wp = sfft.next_fast_len(h + 2 * pad, real=True), sfft.next_fast_len(w + 2 * pad, real=True)
    lo_box = np.array([-pad, -pad], float)
    hi_box = np.array([hp - pad - 1, wp - pad - 1], float)

    # -- support: CeO2 [110] below a rough surface line ------------------------------
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    normal = np.array([math.sin(theta), math.cos(theta)])  # points from support into vacuum
    extent = 0.5 * (h * abs(normal[0]) + w * abs(normal[1]))
    surface_pt = centre + normal * (-extent + 2 * extent * support)
    tangent = np.array([-normal[1], normal[0]])

    def height(p):  # signed distance above the mean support surface, px
        return (p - surface_pt) @ normal

    def edge(p):  # local surface height: a gently wavy edge
        return 0.35 * nn_ce * edge_field.at(p)

    b1, b2, v001 = _fcc110_basis(_CEO2_A_NM / pixel, theta + support_angle)
    ce = _lattice_points(b1, b2, centre + origin_u[0] * b1 + origin_u[1] * b2, lo_box, hi_box)
    depth = edge(ce) - height(ce)
    ce = ce[depth > 0]
    depth = depth[depth > 0]
    # Thinner at the surface (a short wedge over ~1.5 columns), then flat.
    t_support = _saturate(np.clip(0.5 + depth / (3 * nn_ce), 0, 1))
    # Each Ce column has O columns at ±a/4 along [001] in this projection (fluorite [110]).
    o_off = v001 * (_CEO2_A_NM / 4 / pixel)
    pts = [ce, ce + o_off, ce - o_off]
    wts = [_W_CE * t_support, _W_O * t_support, _W_O * t_support]

    # -- particle: faceted, truncated Pt [110] on the surface ------------------------
    radius = min(r_lo + u_radius * (r_hi - r_lo), 0.42 * min(h, w) * pixel) / pixel
    gap = 0.5 * nn_pt  # keeps the first Pt layer clear of the last Ce layer
    p_centre = surface_pt + tangent * (lateral_u * 0.3 * extent) + normal * (height_u * radius)
    pb1, pb2, pv = _fcc110_basis(_PT_A_NM / pixel, particle_angle)
    pu = pb1 - pb2
    # Facet normals: {111} (⊥ b1, b2), {100} (⊥ u, i.e. along [001]), {110} (along u).
    dirs = [pb1, pb2, pu, pv]
    normals = []
    for d in dirs:
        nvec = np.array([-d[1], d[0]]) / np.hypot(*d)
        normals += [nvec, -nvec]
    normals = np.array(normals)
    # {111} facets are the closest (lowest surface energy), {100} truncate the corners and
    # {110} only occasionally show: a Wulff-like, randomly irregular polygon.
    scale = np.repeat([[0.82, 1.0], [0.82, 1.0], [0.88, 1.12], [0.98, 1.25]], 2, axis=0)
    facet_r = radius * (scale[:, 0] + facet_u * (scale[:, 1] - scale[:, 0]))
    box_lo = np.maximum(p_centre - 1.4 * radius, lo_box)
    box_hi = np.minimum(p_centre + 1.4 * radius, hi_box)
    if np.all(box_hi > box_lo):
        pt = _lattice_points(pb1, pb2, p_centre + (origin_u[2] - 0.5) * pb1 + (origin_u[3] - 0.5) * pb2, box_lo, box_hi)
    else:
        pt = np.zeros((0, 2))
    above = height(pt) - edge(pt) >= gap  # the particle follows the local support surface
    facet_depth = (facet_r - (pt - p_centre) @ normals.T).min(axis=1)
    inside = above & (facet_depth >= 0)
    surface = inside & (facet_depth < 0.9 * nn_pt)
    shell = above & (facet_depth < 0) & (facet_depth > -0.95 * nn_pt)
    u_def = rng.uniform(size=pt.shape[0])
    u_occ = rng.uniform(0.5, 1.0, size=pt.shape[0])
    missing = surface & (u_def < defects)
    adatom = shell & (u_def < 0.5 * defects)
    keep = (inside & ~missing) | adatom
    r_rel = np.hypot(*(pt - p_centre).T) / radius
    t_pt = _saturate(np.sqrt(np.clip(1 - r_rel**2, 0.08, 1)))
    # Surface columns are often partly occupied; adatoms are short columns.
    occupancy = np.where(surface | adatom, u_occ, 1.0) * np.where(adatom, 0.6, 1.0)
    # Every candidate site stays in the list (absent ones with weight 0), so the random
    # displacements below belong to the same sites whatever the defect rate.
    pts.append(pt)
    wts.append(_W_PT * t_pt * occupancy * keep)

    points = np.concatenate(pts)
    weights = np.concatenate(wts) * (1 + thick_var * thick_field.at(points))
    # Small static displacements (surface relaxation, strain): 4 pm rms.
    points = points + rng.normal(0.0, 0.004 / pixel, points.shape)
    n_columns = int(np.count_nonzero(weights))

    # -- image formation: weak-phase object through the objective lens --------------
    potential = _splat((hp, wp), points + pad, weights)
    spectrum = sfft.rfft2(potential, workers=1)
    ky = sfft.fftfreq(hp)[:, None] / pixel  # 1/nm
    kx = sfft.rfftfreq(wp)[None, :] / pixel
    k2 = ky**2 + kx**2
    focuses = [focus] if focus_var == 0 else [focus - focus_var, focus + focus_var]
    transfers = [_transfer(k2, df, lam) for df in focuses]
    # Scale so that the stronger of the two perfect, full-thickness lattices at the mean
    # defocus swings `amp` about vacuum: values then sit on the scale of the reference images
    # (0.34–0.63) whatever the contrast mode, and do not depend on which columns happen to
    # be in the field.
    ceo2_basis = [(0.0, 0.0, _W_CE), (*o_off, _W_O), (*(-o_off), _W_O)]
    norm = max(
        _lattice_swing(pb1, pb2, focus, lam, pixel, [(0.0, 0.0, _W_PT)]),
        _lattice_swing(b1, b2, focus, lam, pixel, ceo2_basis),
    )
    rows, cols = np.arange(h), np.arange(w)
    shift_list = np.zeros((1, 2)) if shifts is None else np.asarray(shifts, float)
    frames = np.empty((shift_list.shape[0], h, w), np.float32)
    for t, s in enumerate(shift_list):
        spec = spectrum
        if np.any(s):
            # Fourier shift: a separable phase ramp moves the rendered specimen exactly.
            ramp_r = np.exp(-2j * np.pi * sfft.fftfreq(hp) * s[0])
            ramp_c = np.exp(-2j * np.pi * sfft.rfftfreq(wp) * s[1])
            spec = spectrum * np.outer(ramp_r, ramp_c)
        imgs = [sfft.irfft2(spec * tf, s=(hp, wp), workers=1)[pad : pad + h, pad : pad + w] for tf in transfers]
        if len(imgs) == 1:
            img = imgs[0]
        else:
            # Defocus drifts slowly across the field (specimen tilt, bending): blend the two
            # focus settings with a smooth map that moves with the specimen.
            wgt = 0.5 * (1 + focus_field.grid(rows - s[0], cols - s[1]))
            img = imgs[0] + wgt * (imgs[1] - imgs[0])
        frames[t] = np.clip(vac + (amp / norm) * img, 0.01, 1.5)

    params = {
        "contrast": mode if defocus_nm is None else None,
        "defocus_nm": float(focus),
        "defocus_variation_nm": float(focus_var),
        "pixel_size_nm": float(pixel),
        "particle_radius_nm": float(radius * pixel),
        "defect_rate": float(defects),
        "thickness_variation": float(thick_var),
        "support_fraction": float(support),
        "vacuum": float(vac),
        "contrast_amplitude": float(amp),
        "n_columns": n_columns,
        "voltage_kv": HREM_VOLTAGE_KV,
    }
    return (frames[0] if shifts is None else frames), params


def hrem_phantom(shape=(512, 512), rng=None, **options) -> np.ndarray:
    """Clean HRTEM image of a faceted Pt nanoparticle on a CeO2 support (profile view).

    Atomic columns are placed on two projected lattices — Pt [110] for the particle, CeO2
    [110] (Ce plus weak O columns) for the support, with different spacings and
    orientations — splatted as weighted sub-pixel deltas and imaged through a weak-phase
    transfer function (Kirkland 2010, Ch. 3) with one FFT. The particle is a random
    Wulff-like polygon ({111}, {100}, {110} facets) truncated by the support surface, with
    missing and extra columns at its surface; column strength follows the projected
    thickness; defocus and thickness vary slowly across the field; the rest is vacuum.
    Default scale and values match the multislice images of Mohan et al. (2022): Pt
    columns ~50 px apart, vacuum ≈ 0.45, values ≈ 0.3–0.65.

    Parameters
    ----------
    shape : int or (int, int)
        ``(H, W)`` of the image, 16–4096 pixels per side.
    rng : numpy.random.Generator or int or None
        Source of randomness (an int is used as a seed; None draws a fresh one).
    **options
        Keyword options; each defaults to a random draw from ``rng``:

        contrast : {"bright", "dark", "ring"}
            Contrast regime, chosen through the defocus: bright columns on dark halos,
            dark columns, or ring-like (partly reversed) contrast at larger defocus.
        defocus_nm : float
            Defocus in nm (overrides ``contrast``); positive gives bright columns.
        defocus_variation_nm : float
            Amplitude of the slow defocus change across the field (default 0–1.5 nm).
        pixel_size_nm : float
            Pixel size, 0.001–0.05 nm; sets the lattice scale (default 0.0049 nm ± 10 %,
            the scale of the reference images: Pt columns ~49 px apart).
        radius_nm : (float, float)
            Range of the particle radius (default 0.6–1.2 nm; capped at 0.42 of the field).
        defect_rate : float
            Probability that a surface column is missing; half of it is the chance of an
            extra column (adatom) at each site just outside the surface (default 0–0.15).
        thickness_variation : float
            Relative amplitude of the slow thickness change (default 0.05–0.25).
        support_fraction : float
            How far the support reaches into the field, 0–0.9 (default 0.2–0.4).
        vacuum : float
            Vacuum level (default 0.43–0.47).
        contrast_amplitude : float
            Peak column contrast above vacuum (default 0.13–0.18).

    Returns
    -------
    ndarray
        float32 ``(H, W)`` clean image, positive.

    Raises
    ------
    EmcoreError
        For a bad shape or an option value out of range.

    References
    ----------
    Mohan et al. (2022); Kirkland (2010); Jia et al. (2004) — see the module docstring.
    """
    unknown = sorted(set(options) - set(HREM_OPTIONS))
    if unknown:
        raise EmcoreError(f"Unknown phantom option(s) {', '.join(unknown)}; valid options are {', '.join(HREM_OPTIONS)}.")
    image, _ = _hrem_render(shape, rng, **options)
    return image


HREM_OPTIONS = (
    "contrast",
    "defocus_nm",
    "defocus_variation_nm",
    "pixel_size_nm",
    "radius_nm",
    "defect_rate",
    "thickness_variation",
    "support_fraction",
    "vacuum",
    "contrast_amplitude",
)


# Dose ranges shown in the app; the examples refuse values outside them.
_HREM_DOSE = (0.1, 1000.0)


def _noisy_label(noise, dose: float) -> str:
    if noise is None:
        return f"{dose:g} e⁻/px"
    describe = getattr(noise, "describe", None)
    return describe() if callable(describe) else type(noise).__name__


def hrem_example(seed=0, dose: float = 1.0, size: int = 512, noise=None, *, rng=None) -> Dataset:
    """Simulated low-dose HRTEM image of a Pt nanoparticle on CeO2, with its clean truth.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        Seed (or Generator) for the phantom and the noise.
    dose : float
        Electrons per pixel, 0.1–1000 (Mohan et al. 2022 recorded ~0.45 e⁻/px).
    size : int
        Image side in pixels (16–4096).
    noise : noise model, optional
        Any object with ``sample(clean, rng)`` (see :mod:`emcore.noise`); default
        ``Poisson(dose)``: ``poisson(clean * dose) / dose``, on the scale of the clean image.
        When given, ``dose`` only goes into the metadata.
    rng : numpy.random.Generator, optional
        Overrides ``seed``.

    Returns
    -------
    Dataset
        kind ``"image"``; ``data`` noisy, ``ground_truth`` clean, ``noise`` the model used.
    """
    dose = _check_range(dose, *_HREM_DOSE, "dose", "e⁻/pixel")
    size = _check_int(size, 16, 4096, "image size")
    gen = _make_rng(seed, rng)
    # The example keeps bright-column contrast, like the reference simulations.
    clean, params = _hrem_render((size, size), gen, contrast="bright")
    model = Poisson(dose) if noise is None else noise
    noisy = model.sample(clean, gen)
    return Dataset(
        data=noisy,
        kind="image",
        calibration=Calibration(pixel_size=params["pixel_size_nm"], pixel_unit="nm"),
        name=f"Simulated HRTEM (Pt on CeO2), {_noisy_label(noise, dose)}",
        ground_truth=clean,
        is_counts=False,
        noise=model,
        metadata={
            "source": "emcore.sim.hrem",
            "seed": _seed_meta(seed, rng),
            "dose": dose,
            "voltage_kv": HREM_VOLTAGE_KV,
            "phantom": params,
        },
    )
