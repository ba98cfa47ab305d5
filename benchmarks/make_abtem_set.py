"""Physics-based HRTEM training set: multislice images of a Pt nanoparticle on CeO2 (issue 4).

The system and the viewing direction follow the simulated training data of Vincent et al.
(Microsc. Microanal. 27, 2021, Sec. "Simulated dataset") and Mohan et al. ("Deep denoising
for scientific discovery", IEEE TCI 8, 2022, Sec. V): a faceted Pt particle sitting
cube-on-cube on the (111) surface of CeO2, both viewed along [110], imaged by plane-wave
HRTEM at 300 kV. Each *exit wave* is one atomic model (particle size and Wulff shape,
truncation at the interface, orientation variant, support thickness along the beam) under
one small specimen tilt, computed by the multislice method with abTEM (Madsen & Susi, Open
Res. Europe 1, 24, 2021). Each exit wave is then imaged through the objective-lens contrast
transfer function at several defocus values (Kirkland, "Advanced Computing in Electron
Microscopy", 2nd ed. 2010, Sec. 3.3–3.4: aberration phase, spatial-coherence envelope,
temporal coherence as an incoherent sum over defocus) and written as an intensity image on
the scale of the reference images (vacuum = 0.45).

Structures (ASE)
    CeO2 fluorite, a = 5.411 Å; image frame x = [1-1-2] (periodic, 6 × 6.627 Å),
    y = [1-11] (surface normal, support at the bottom, O-terminated O–Ce–O trilayers),
    z = [110] (beam), support thickness along z = n × 3.826 Å. Pt fcc, a = 3.924 Å, a Wulff
    polyhedron ({111} and {100} facets, γ100/γ111 drawn per particle) from
    ``ase.cluster.wulff_construction``, cut flat at a (111) layer where it meets the support,
    1.9–2.6 Å above the top O layer. Orientation variants: epitaxial; twinned (180° about the
    surface normal); rotated a few degrees about the beam; rotated about the surface normal
    off the zone axis (lattice fringes only).
Multislice
    ``abtem.PlaneWave`` at 300 kV on the ``--sampling`` grid (0.05 Å by default: on the
    thickest model, images made at 0.1 Å differ from those at 0.035 Å by 20–46 % of their
    contrast (rms), at 0.07 Å by 11–20 %, at 0.05 Å by 5–14 %; Pt and Ce scatter far out
    and abTEM keeps 2/3 of Nyquist), slices of ``--slice`` Å (default one (220) atomic
    plane, 1.913 Å; halving it changes the images by 5–11 %), independent-atom potential
    (Lobato parametrisation, abTEM default), static lattice (no frozen phonons: one exit
    wave per model keeps the CPU budget). The specimen tilt enters the Fresnel propagator (abTEM's
    ``tilt``), so the direct beam stays on the optical axis.
Imaging (numpy, per defocus)
    χ(k) = π λ k² (½ Cs λ² k² − Δf) with Kirkland's sign (Δf > 0 is underfocus); spatial
    coherence envelope exp[−(π α/λ)² (Cs λ³ k³ − Δf λ k)²] on the wave (quasi-coherent);
    focal spread as an incoherent sum over 7 Gauss–Hermite defocus nodes (exact for a
    Gaussian spread); objective aperture; a Gaussian blur of the intensity (vibration,
    detector MTF). The intensity is computed on the output grid by zero-padding the wave's
    spectrum (exact for a band-limited wave), so the output pixel may be finer than the
    multislice sampling.

Output: a compressed ``.npz`` (``--out``, default ``runs/abtem_set.npz``) holding ``images``
float32 (N, H, W), ``pixel_size_nm`` (N,), ``defocus_nm`` (N,), ``thickness_nm`` (N,;
support thickness along the beam), ``tilt_mrad`` (N, 2; specimen tilt about x, y),
``cs_um``, ``focal_spread_nm``, ``convergence_mrad``, ``blur_nm``, ``wave_index`` (N,),
and ``meta`` (a JSON string: generation parameters, versions, per-exit-wave models and
timings). Row 0 of an image is the top (vacuum side). Every exit wave is also kept under
``<out>.parts/`` so an interrupted run resumes, and a run with a larger ``--waves`` and the
same seed appends new exit waves (exit wave *i* depends only on ``(seed, i)``).

Run it in its own environment (``requirements-physics.txt``), politely::

    python3 -m venv .venv-physics
    nice -n 10 .venv-physics/bin/pip install -r requirements-physics.txt
    nice -n 10 .venv-physics/bin/python benchmarks/make_abtem_set.py --waves 32 --defoci 8

The images in ``../shared/data/hrem`` are for validation only and are never read here.
"""

from __future__ import annotations

import argparse
import os
import sys

# Threads must be capped before numpy / numba / FFTW start: this machine is shared.
_THREADS = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _THREADS = _a.split("=", 1)[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = _THREADS

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    import abtem  # noqa: E402
    import ase  # noqa: E402
    from ase import Atoms  # noqa: E402
    from ase.cluster import wulff_construction  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the environment
    sys.exit(f"This script needs abTEM and ASE ({err}). Install them in their own environment: "
             "python3 -m venv .venv-physics && .venv-physics/bin/pip install -r requirements-physics.txt, "
             "then run it with .venv-physics/bin/python.")

A_CEO2 = 5.411  # Å, CeO2 fluorite lattice parameter
A_PT = 3.924  # Å, Pt fcc lattice parameter
ENERGY = 300e3  # eV
# Bumped whenever a code change alters the images, so cached exit waves of another version
# are never mixed into a set (they are refused on resume).
GENERATOR_VERSION = 2

# Image frame in cubic coordinates: rows are the unit vectors x = [1-1-2], y = [1-11], z = [110].
FRAME = np.array([[1, -1, -2], [1, -1, 1], [1, 1, 0]], float)
FRAME /= np.linalg.norm(FRAME, axis=1)[:, None]
PERIOD_X = A_CEO2 * math.sqrt(6) / 2  # repeat of CeO2 along [1-1-2], 6.627 Å
PERIOD_Y = A_CEO2 * math.sqrt(3)  # O–Ce–O trilayer stacking ABC along [1-11], 9.372 Å
PERIOD_Z = A_CEO2 / math.sqrt(2)  # repeat along [110], 3.826 Å
D111_PT = A_PT / math.sqrt(3)  # Pt (111) layer spacing, 2.266 Å

_FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
_CEO2_BASIS = np.concatenate([_FCC, _FCC + 0.25, _FCC + 0.75])
_CEO2_SYMBOLS = ["Ce"] * 4 + ["O"] * 8


def wavelength(energy: float = ENERGY) -> float:
    """Relativistic electron wavelength in Å (Kirkland 2010, eq. 2.5)."""
    return 12.2643 / math.sqrt(energy * (1 + 0.97845e-6 * energy))


def _rotation(axis, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def ceo2_support(width: float, height: float, depth: float) -> Atoms:
    """CeO2 block in the image frame filling [0, width) × [0, height) × [0, depth), in Å.

    ``width`` is a multiple of the [1-1-2] repeat so the block is periodic along x. The top
    is cut just above the O layer of a complete O–Ce–O trilayer (the stable (111) termination).
    """
    box = np.array([width, height + 4.0, depth])
    corners = np.array([[x, y, z] for x in (0, box[0]) for y in (0, box[1]) for z in (0, box[2])])
    cub = corners @ FRAME / A_CEO2  # frame → cubic coordinates
    lo, hi = np.floor(cub.min(0)) - 1, np.ceil(cub.max(0)) + 1
    g = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    pos = ((g[:, None, :] + _CEO2_BASIS[None]) * A_CEO2).reshape(-1, 3) @ FRAME.T
    sym = np.tile(np.array(_CEO2_SYMBOLS), len(g))
    keep = np.all((pos >= -1e-6) & (pos < box - 1e-6), axis=1)
    pos, sym = pos[keep], sym[keep]
    ce_y = np.unique(np.round(pos[sym == "Ce", 1], 3))
    top_ce = ce_y[ce_y <= height].max()
    keep = pos[:, 1] <= top_ce + 1.0  # the O layer 0.78 Å above the top Ce layer stays
    return Atoms(symbols=list(sym[keep]), positions=pos[keep], cell=[width, height, depth], pbc=True)


def pt_particle(n_atoms: int, gamma_ratio: float, truncation: float, variant: str, angle_deg: float) -> Atoms:
    """Pt Wulff particle in the image frame, flat (111) base at y = 0, centred on x = z = 0.

    ``truncation`` is the fraction of its (111) layers cut off below the interface.
    """
    cl = wulff_construction("Pt", surfaces=[(1, 0, 0), (1, 1, 1)], energies=[gamma_ratio, 1.0],
                            size=int(n_atoms), structure="fcc", rounding="closest", latticeconstant=A_PT)
    pos = cl.positions - cl.positions.mean(0)
    pos = pos @ FRAME.T  # cube-on-cube with the support: Pt[110] ∥ beam, Pt(111) ∥ CeO2(111)
    layer_y = np.sort(np.unique(np.round(pos[:, 1], 2)))
    cut = layer_y[min(int(truncation * len(layer_y)), len(layer_y) - 2)]
    pos = pos[pos[:, 1] >= cut - 0.05]
    centre = np.array([0.5 * (pos[:, 0].min() + pos[:, 0].max()), pos[:, 1].min(),
                       0.5 * (pos[:, 2].min() + pos[:, 2].max())])
    pos = pos - centre
    if variant == "twin":  # 180° about the surface normal: the twinned fcc stacking
        pos = pos @ _rotation([0, 1, 0], 180.0).T
    elif variant == "inplane":  # rotated about the beam, still on the zone axis
        pos = pos @ _rotation([0, 0, 1], angle_deg).T
        pos[:, 1] -= pos[:, 1].min()
    elif variant == "offzone":  # rotated about the surface normal, off the [110] zone axis
        pos = pos @ _rotation([0, 1, 0], angle_deg).T
    return Atoms(symbols=["Pt"] * len(pos), positions=pos)


def draw_model(seed: int, index: int, args) -> dict:
    """Parameters of exit wave ``index``: depend only on ``(seed, index)``."""
    rng = np.random.default_rng([seed, index, 0])
    variant = str(rng.choice(["epitaxial", "twin", "inplane", "offzone"], p=[0.45, 0.2, 0.2, 0.15]))
    angle = {"epitaxial": 0.0, "twin": 180.0, "inplane": float(rng.uniform(-8, 8)),
             "offzone": float(rng.uniform(15, 45))}[variant]
    tilt_abs = float(args.max_tilt_mrad * math.sqrt(rng.uniform()))  # uniform over the tilt disc
    tilt_dir = float(rng.uniform(0, 2 * math.pi))
    return {
        "index": index,
        "n_pt": int(rng.integers(args.pt_atoms[0], args.pt_atoms[1] + 1)),
        "gamma100_over_111": float(rng.uniform(1.0, 1.3)),
        "truncation": float(rng.uniform(0.1, 0.4)),
        "variant": variant,
        "angle_deg": angle,
        "support_periods_z": int(rng.integers(args.support_periods[0], args.support_periods[1] + 1)),
        "support_trilayers": float(rng.uniform(2.0, 3.0)),
        "interface_gap_A": float(rng.uniform(1.9, 2.6)),
        "particle_x_frac": float(rng.uniform(0.35, 0.65)),
        "tilt_mrad": [tilt_abs * math.cos(tilt_dir), tilt_abs * math.sin(tilt_dir)],
    }


def geometry(args) -> tuple[float, float, int, float]:
    """Field width (Å), output pixel (Å), margin (px) and cell height (Å).

    The cell is taller than the square image by ``margin`` pixels at the top and bottom,
    cropped after imaging: the periodic boundary would otherwise put the underside of the
    support next to the vacuum at the top edge, and the lens (whose delocalisation reaches a
    few Å at 12 nm defocus) would mix the two.
    """
    width = args.cells_x * PERIOD_X
    pixel = width / args.size
    margin = int(math.ceil(args.margin / pixel))
    return width, pixel, margin, width + 2 * margin * pixel


def build_system(model: dict, args) -> tuple[Atoms, dict]:
    """Atomic model (support + particle), beam along z, support from y = 0 up."""
    width, _, _, height = geometry(args)
    depth_support = model["support_periods_z"] * PERIOD_Z
    h_support = model["support_trilayers"] * PERIOD_Y
    support = ceo2_support(width, h_support, depth_support)
    particle = pt_particle(model["n_pt"], model["gamma100_over_111"], model["truncation"],
                           model["variant"], model["angle_deg"])
    top_o = support.positions[:, 1].max()
    depth = max(depth_support, np.ptp(particle.positions[:, 2]) + 2.0) + 1.0
    support.positions[:, 2] += 0.5 * (depth - depth_support)
    particle.positions += [model["particle_x_frac"] * width, top_o + model["interface_gap_A"], 0.5 * depth]
    system = support + particle
    system.set_cell([width, height, depth])
    system.pbc = [True, True, False]
    system.wrap()
    info = {"n_atoms": len(system), "n_pt_kept": len(particle), "cell_A": [width, height, depth],
            "support_thickness_nm": depth_support / 10,
            "particle_height_nm": float(np.ptp(particle.positions[:, 1]) / 10),
            "particle_width_nm": float(np.ptp(particle.positions[:, 0]) / 10),
            "particle_depth_nm": float(np.ptp(particle.positions[:, 2]) / 10)}
    return system, info


def exit_wave(system: Atoms, sampling: float, slice_thickness: float, tilt_mrad) -> np.ndarray:
    """Multislice exit wave (abTEM), complex (nx, ny) with the incident amplitude 1."""
    potential = abtem.Potential(system, sampling=sampling, slice_thickness=slice_thickness,
                                projection="infinite", parametrization="lobato")
    wave = abtem.PlaneWave(energy=ENERGY, tilt=tuple(float(t) for t in tilt_mrad))
    exit_ = wave.multislice(potential)
    exit_ = exit_.compute(scheduler="synchronous", progress_bar=False)
    return np.asarray(exit_.array)


def _resize_spectrum(spec: np.ndarray, out_shape) -> np.ndarray:
    """Fourier resampling: the frequencies an fft-ordered spectrum shares with ``out_shape``.

    Zero-pads (finer output grid) or crops (coarser) about zero frequency; the grid spacing in
    reciprocal space (1 / extent) is the same for both.
    """
    index = []
    for n_in, n_out in zip(spec.shape, out_shape):
        m = np.rint(np.fft.fftfreq(n_in) * n_in).astype(int)
        keep = (m >= -(n_out // 2)) & (m <= (n_out - 1) // 2)
        index.append((np.flatnonzero(keep), m[keep] % n_out))
    out = np.zeros(out_shape, complex)
    out[np.ix_(index[0][1], index[1][1])] = spec[np.ix_(index[0][0], index[1][0])]
    return out


def image_wave(wave: np.ndarray, extent, out_shape, defocus_A: float, cs_A: float, focal_spread_A: float,
               convergence_mrad: float, aperture_mrad: float, blur_A: float) -> np.ndarray:
    """HRTEM intensity of an exit wave through the objective lens (Kirkland 2010, Sec. 3.3–3.4).

    ``wave`` is (ny, nx) on a grid of physical ``extent`` (Å, Å); the intensity comes back on
    ``out_shape`` over the same extent (float64, vacuum = 1).
    """
    lam = wavelength()
    ny, nx = out_shape
    spec = np.fft.fft2(wave) * (ny * nx) / wave.size
    spec = _resize_spectrum(spec, out_shape)
    ky = np.fft.fftfreq(ny, d=extent[0] / ny)[:, None]
    kx = np.fft.fftfreq(nx, d=extent[1] / nx)[None, :]
    k2 = kx ** 2 + ky ** 2
    k = np.sqrt(k2)
    aperture = k * lam <= aperture_mrad * 1e-3
    alpha = convergence_mrad * 1e-3
    # Gauss–Hermite quadrature of a Gaussian focal spread (standard deviation focal_spread_A)
    nodes, weights = np.polynomial.hermite.hermgauss(7 if focal_spread_A > 0 else 1)
    weights = weights / weights.sum()
    intensity = np.zeros(out_shape)
    for x, w in zip(nodes, weights):
        df = defocus_A + math.sqrt(2) * focal_spread_A * x
        chi = math.pi * lam * k2 * (0.5 * cs_A * lam ** 2 * k2 - df)
        env_s = np.exp(-(math.pi * alpha / lam) ** 2 * (cs_A * lam ** 3 * k ** 3 - df * lam * k) ** 2)
        psi = np.fft.ifft2(spec * np.exp(-1j * chi) * env_s * aperture)
        intensity += w * (psi.real ** 2 + psi.imag ** 2)
    if blur_A > 0:
        intensity = np.fft.ifft2(np.fft.fft2(intensity) * np.exp(-2 * math.pi ** 2 * blur_A ** 2 * k2)).real
    return intensity


def imaging_conditions(seed: int, index: int, n_defoci: int, args) -> list[dict]:
    """Defocus values spread evenly over the range (jittered), one aberration set per exit wave."""
    rng = np.random.default_rng([seed, index, 2])
    lo, hi = args.defocus_nm
    edges = np.linspace(lo, hi, n_defoci + 1)
    cs_um = float(rng.uniform(*args.cs_um))
    out = []
    for j in range(n_defoci):
        out.append({
            "defocus_nm": float(rng.uniform(edges[j], edges[j + 1])),
            "cs_um": cs_um,
            "focal_spread_nm": float(rng.uniform(*args.focal_spread_nm)),
            "convergence_mrad": float(rng.uniform(*args.convergence_mrad)),
            "blur_nm": float(rng.uniform(*args.blur_nm)),
        })
    return out


def make_wave_part(index: int, args, part_path: Path) -> dict:
    """Simulate exit wave ``index`` and its defocus series; write ``part_path``; return its record."""
    t0, c0 = time.perf_counter(), time.process_time()
    model = draw_model(args.seed, index, args)
    system, info = build_system(model, args)
    t_build = time.perf_counter() - t0
    wave = exit_wave(system, args.sampling, args.slice, model["tilt_mrad"])
    t_ms = time.perf_counter() - t0 - t_build
    wave = wave.T[::-1]  # abTEM is indexed (x, y); images are (row, col) with the vacuum on top
    extent = (system.cell[1, 1], system.cell[0, 0])
    _, pixel, margin, _ = geometry(args)
    out_shape = (args.size + 2 * margin, args.size)
    conds = imaging_conditions(args.seed, index, args.defoci, args)
    images = []
    for c in conds:
        img = image_wave(wave, extent, out_shape, c["defocus_nm"] * 10, c["cs_um"] * 1e4,
                         c["focal_spread_nm"] * 10, c["convergence_mrad"], args.aperture_mrad, c["blur_nm"] * 10)
        images.append((args.vacuum * img[margin:margin + args.size]).astype(np.float32))
    record = {**model, **info, "seconds_build": t_build, "seconds_multislice": t_ms,
              "seconds_total": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
              "gpts": list(wave.shape)}
    n = len(conds)
    tmp = part_path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=np.stack(images), pixel_size_nm=np.full(n, pixel / 10, np.float32),
             defocus_nm=np.array([c["defocus_nm"] for c in conds], np.float32),
             thickness_nm=np.full(n, info["support_thickness_nm"], np.float32),
             tilt_mrad=np.tile(np.array(model["tilt_mrad"], np.float32), (n, 1)),
             cs_um=np.array([c["cs_um"] for c in conds], np.float32),
             focal_spread_nm=np.array([c["focal_spread_nm"] for c in conds], np.float32),
             convergence_mrad=np.array([c["convergence_mrad"] for c in conds], np.float32),
             blur_nm=np.array([c["blur_nm"] for c in conds], np.float32),
             wave_index=np.full(n, index, np.int32), record=np.array(json.dumps(record)))
    os.replace(tmp, part_path)
    return record


ARRAY_KEYS = ("images", "pixel_size_nm", "defocus_nm", "thickness_nm", "tilt_mrad", "cs_um",
              "focal_spread_nm", "convergence_mrad", "blur_nm", "wave_index")


def _settings(args) -> dict:
    keys = ("seed", "defoci", "size", "sampling", "slice", "cells_x", "margin", "max_tilt_mrad", "pt_atoms",
            "support_periods", "defocus_nm", "cs_um", "focal_spread_nm", "convergence_mrad", "blur_nm",
            "aperture_mrad", "vacuum")
    return {"generator_version": GENERATOR_VERSION, **{k: getattr(args, k) for k in keys}}


def assemble(parts: list[Path], args, out: Path, seconds: float) -> dict:
    arrays = {k: [] for k in ARRAY_KEYS}
    records = []
    for p in parts:
        with np.load(p, allow_pickle=False) as z:
            for k in ARRAY_KEYS:
                arrays[k].append(z[k])
            records.append(json.loads(str(z["record"])))
    data = {k: np.concatenate(v) for k, v in arrays.items()}
    meta = {
        "description": "HRTEM images of a Pt nanoparticle on CeO2(111), [110] zone, abTEM multislice "
                       "+ CTF; vacuum = settings.vacuum; row 0 is the vacuum side.",
        "generator": "benchmarks/make_abtem_set.py",
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "versions": {"abtem": abtem.__version__, "ase": ase.__version__, "numpy": np.__version__},
        "settings": _settings(args),
        "conventions": {"defocus": "Kirkland: positive = underfocus", "tilt_mrad": "specimen tilt about "
                        "(x, y) in the abTEM propagator", "thickness_nm": "CeO2 support along the beam"},
        "exit_waves": records,
        "cpu_seconds_total": float(sum(r.get("cpu_seconds", float("nan")) for r in records)),
        "wall_seconds_total": float(sum(r["seconds_total"] for r in records)),
        "wall_seconds_this_run": seconds,
    }
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data, meta=np.array(json.dumps(meta)))
    os.replace(tmp, out)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/abtem_set.npz", help="cache file (.npz)")
    ap.add_argument("--waves", type=int, default=32, help="exit waves (atomic models × tilts)")
    ap.add_argument("--defoci", type=int, default=8, help="defocus values per exit wave")
    ap.add_argument("--seed", type=int, default=0, help="exit wave i depends only on (seed, i)")
    ap.add_argument("--size", type=int, default=512, help="output image side, px")
    ap.add_argument("--sampling", type=float, default=0.05, help="multislice sampling, Å")
    ap.add_argument("--slice", type=float, default=PERIOD_Z / 2, help="slice thickness, Å")
    ap.add_argument("--cells-x", type=int, default=6, help="field width in CeO2 [1-1-2] repeats (6.627 Å)")
    ap.add_argument("--margin", type=float, default=6.0, help="cell rows cropped at top and bottom, Å")
    ap.add_argument("--max-tilt-mrad", type=float, default=17.5, help="largest specimen tilt (17.5 mrad = 1°)")
    ap.add_argument("--pt-atoms", type=int, nargs=2, default=(150, 700), help="Pt atoms before truncation")
    ap.add_argument("--support-periods", type=int, nargs=2, default=(5, 13),
                    help="support thickness along the beam in 3.826 Å repeats (5–13: 1.9–5.0 nm)")
    ap.add_argument("--defocus-nm", type=float, nargs=2, default=(-12.0, 12.0),
                    help="defocus range, spread evenly over --defoci values (Kirkland sign: + = underfocus)")
    ap.add_argument("--cs-um", type=float, nargs=2, default=(-20.0, 20.0), help="spherical aberration, µm")
    ap.add_argument("--focal-spread-nm", type=float, nargs=2, default=(2.0, 5.0),
                    help="standard deviation of the defocus (chromatic spread)")
    ap.add_argument("--convergence-mrad", type=float, nargs=2, default=(0.1, 0.5),
                    help="illumination semi-angle (spatial coherence)")
    ap.add_argument("--blur-nm", type=float, nargs=2, default=(0.02, 0.06), help="Gaussian σ of the image blur")
    ap.add_argument("--aperture-mrad", type=float, default=40.0, help="objective aperture semi-angle")
    ap.add_argument("--vacuum", type=float, default=0.45, help="image value of vacuum (reference images: 0.45)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (numba, FFTW, BLAS)")
    ap.add_argument("--nice", type=int, default=10, help="added niceness (0: none)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)
    abtem.config.set({"fftw.threads": args.threads, "fftw.planning_effort": "FFTW_ESTIMATE",
                      "diagnostics.progress_bar": False, "mkl.threads": args.threads})

    _, pixel, _, _ = geometry(args)
    k_aperture = args.aperture_mrad * 1e-3 / wavelength()
    if pixel > 1 / (4 * k_aperture):  # intensity reaches twice the aperture frequency
        print(f"Warning: {pixel:.3f} Å pixels cannot hold the image detail the {args.aperture_mrad:g} mrad aperture "
              f"passes (needs ≤ {1 / (4 * k_aperture):.3f} Å); raise --size or lower --aperture-mrad.", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = Path(str(out) + ".parts")
    parts_dir.mkdir(exist_ok=True)
    settings_file = parts_dir / "settings.json"
    settings = {k: v for k, v in _settings(args).items()}
    settings_json = json.dumps(settings, sort_keys=True, default=list)
    if settings_file.exists() and json.loads(settings_file.read_text()) != json.loads(settings_json):
        sys.exit(f"{parts_dir} holds exit waves made with other settings ({settings_file}); "
                 "use another --out or delete that folder.")
    settings_file.write_text(settings_json)

    t0 = time.perf_counter()
    parts = []
    for i in range(args.waves):
        part = parts_dir / f"wave_{i:04d}.npz"
        if part.exists():
            print(f"[{i + 1}/{args.waves}] cached {part.name}", flush=True)
        else:
            rec = make_wave_part(i, args, part)
            print(f"[{i + 1}/{args.waves}] {rec['variant']:<9} Pt {rec['n_pt_kept']:4d} atoms, "
                  f"support {rec['support_thickness_nm']:.2f} nm, tilt {np.hypot(*rec['tilt_mrad']):4.1f} mrad, "
                  f"{rec['n_atoms']} atoms, grid {rec['gpts']}: {rec['seconds_total']:.1f} s "
                  f"(multislice {rec['seconds_multislice']:.1f} s; CPU {rec['cpu_seconds']:.1f} s)", flush=True)
        parts.append(part)
    meta = assemble(parts, args, out, time.perf_counter() - t0)
    with np.load(out, allow_pickle=False) as z:
        imgs = z["images"]
        summary = {"bench": "make_abtem_set", "out": str(out), "images": list(imgs.shape),
                   "mb": round(out.stat().st_size / 2**20, 1), "pixel_size_nm": float(z["pixel_size_nm"][0]),
                   "cpu_seconds_total": round(meta["cpu_seconds_total"], 1),
                   "wall_seconds_total": round(meta["wall_seconds_total"], 1),
                   "wall_seconds_this_run": round(meta["wall_seconds_this_run"], 1),
                   "value_range": [float(imgs.min()), float(imgs.max())], "mean": float(imgs.mean())}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
