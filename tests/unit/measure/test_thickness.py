"""Wall thickness on analytic phantoms (exact answers), errors in voxels of the finest axis.

These pin the solver's accuracy on representative rows; the full table, against pyezzi,
is ``bench/thickness.py`` (``bench/results/thickness.json``).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sitetune.errors import InvalidInput
from sitetune.imaging.phantoms.analytic import cylindrical_shell, slab, spherical_shell
from sitetune.measure.thickness import wall_thickness


def _errors(phantom, surfaces: str = "fitted") -> np.ndarray:
    result = wall_thickness(phantom.labels.array, phantom.labels.spacing, surfaces=surfaces)
    return (result.thickness_mm[phantom.valid] - phantom.thickness_mm) / min(phantom.labels.spacing)


@pytest.mark.parametrize(
    ("spacing", "surfaces", "max_error"),
    [
        ((1.0, 1.0, 1.0), "fitted", 0.6),
        ((0.5, 0.5, 0.7), "fitted", 0.6),
        ((1.0, 1.0, 2.0), "fitted", 0.6),
        ((1.0, 1.0, 1.0), "smoothed", 0.6),
        ((0.5, 0.5, 0.7), "smoothed", 0.6),
        # the smoothing alone misses the max target at some 1x1x2 mm offsets (bench)
        ((1.0, 1.0, 2.0), "smoothed", 0.7),
    ],
)
def test_spherical_shell(spacing, surfaces, max_error):
    radius = 20 * max(spacing)
    phantom = spherical_shell(radius, 1.5 * radius, spacing, rng=np.random.default_rng(1))
    errors = _errors(phantom, surfaces)
    assert abs(errors.mean()) <= 0.1
    assert np.percentile(np.abs(errors), 95) <= 0.3
    assert np.abs(errors).max() <= max_error


@pytest.mark.parametrize("seed", [0, 1])
def test_dome_over_coarse_slices_is_placed_from_its_terraces(seed):
    """At the poles of a sphere sampled with 0.7 mm slices the surfaces run between two
    slices over wide terraces; a local estimate puts them at the midpoint (up to 0.8
    voxel off at the pole), the wider curvature-corrected smoothing places them."""
    phantom = spherical_shell(50, 56, (0.5, 0.5, 0.7), rng=np.random.default_rng(seed))
    result = wall_thickness(phantom.labels.array, phantom.labels.spacing, surfaces="smoothed")
    centre = np.array(phantom.description["centre_mm"])
    points = np.argwhere(phantom.valid) * np.array(phantom.labels.spacing) - centre
    pole = np.abs(points[:, 2]) / np.linalg.norm(points, axis=1) > 0.99
    errors = (result.thickness_mm[phantom.valid] - phantom.thickness_mm) / 0.5
    assert pole.sum() > 50
    assert np.abs(errors[pole]).max() <= 0.5
    assert result.method["coarse_slices"]["axis"] == 2


def _offset_phantoms(seed: int, count: int):
    """The first ``count`` centre offsets drawn from ``seed``, as bench/thickness.py draws
    them for its 1 mm rows (sphere 20-30, 30-40, 50-56, cylinder axis z)."""
    rng = np.random.default_rng(seed)
    rows = [
        lambda: spherical_shell(20, 30, rng=rng),
        lambda: spherical_shell(30, 40, rng=rng),
        lambda: spherical_shell(50, 56, rng=rng),
        lambda: cylindrical_shell(20, 30, rng=rng),
    ]
    return [make() for make in rows[:count]]


@pytest.mark.parametrize(("seed", "row"), [(4, 0), (1, 3)])
def test_fitted_surfaces_meet_the_targets_at_hard_offsets(seed, row):
    """Offsets where the smoothing alone misses at 1 mm (sphere 20-30: max 0.70 voxel;
    z-cylinder: p95 0.32, max 0.62): fitting the staircase places the surfaces."""
    phantom = _offset_phantoms(seed, row + 1)[row]
    errors = _errors(phantom)
    assert abs(errors.mean()) <= 0.1
    assert np.percentile(np.abs(errors), 95) <= 0.3
    assert np.abs(errors).max() <= 0.6


@pytest.mark.parametrize("seed", [1, 3])
def test_fitted_surfaces_meet_the_targets_over_coarse_slices(seed):
    """1x1x2 mm offsets where the smoothing alone misses the max target (0.62 and 0.61
    voxel): fitting the in-plane links to their staircase places the surfaces."""
    phantom = spherical_shell(20, 30, (1.0, 1.0, 2.0), rng=np.random.default_rng(seed))
    result = wall_thickness(phantom.labels.array, phantom.labels.spacing)
    errors = result.thickness_mm[phantom.valid] - phantom.thickness_mm  # finest axis: 1 mm
    assert result.method["surfaces"] == "fitted"
    assert result.method["coarse_slices"]["axis"] == 2
    assert abs(errors.mean()) <= 0.1
    assert np.percentile(np.abs(errors), 95) <= 0.3
    assert np.abs(errors).max() <= 0.6


def test_fitted_surfaces_keep_planes_exact():
    for normal, thickness in (((1, 0, 0), 8.0), ((1, 1, 0), 11 / 2**0.5), ((1, 1, 1), 14 / 3**0.5)):
        errors = _errors(slab(thickness, normal, rng=np.random.default_rng(5)))
        assert np.abs(errors).max() <= 0.1
    for normal in ((1, 0, 0), (1, 1, 0), (1, 1, 1)):  # coarse slices: as the smoothing
        phantom = slab(8.0, normal, (1.0, 1.0, 2.0), rng=np.random.default_rng(5))
        errors = _errors(phantom)
        assert np.abs(errors - _errors(phantom, "smoothed")).max() <= 0.02, normal
    with pytest.raises(ValueError, match="surfaces must be one of 'fitted', 'smoothed'"):
        wall_thickness(phantom.labels.array, phantom.labels.spacing, surfaces="exact")


def test_fitted_surfaces_handle_one_voxel_structures():
    """A one-voxel blood pool has links whose normals cancel: no fit, the smoothing's
    placement is kept, and the thickness is finite and close to the smoothing's."""
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 2
    labels[10, 10, 10] = 1
    fitted = wall_thickness(labels, (1.0, 1.0, 1.0))
    smoothed = wall_thickness(labels, (1.0, 1.0, 1.0), surfaces="smoothed")
    assert np.isfinite(fitted.thickness_mm).all()
    assert abs(fitted.stats["median"] - smoothed.stats["median"]) <= 1.0


def test_axis_aligned_slab_of_whole_voxels_is_exact():
    errors = _errors(slab(7.0, (1, 0, 0), (1.0, 1.0, 1.0), rng=np.random.default_rng(0)))
    assert np.abs(errors).max() <= 1e-3


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
def test_oblique_slabs_have_no_orientation_bias(spacing):
    """Slabs whose thickness is a whole number of projected lattice steps (so the label
    map determines it exactly): every orientation is measured without bias."""
    biases = []
    for normal, thickness in (((1, 0, 0), 8.0), ((1, 1, 0), 11 / 2**0.5), ((1, 1, 1), 14 / 3**0.5)):
        errors = _errors(slab(thickness, normal, spacing, rng=np.random.default_rng(4)))
        assert np.abs(errors).max() <= 0.1
        biases.append(errors.mean())
    assert max(biases) - min(biases) <= 0.1


def test_oblique_cylinder():
    cylinder = cylindrical_shell(20, 30, axis=(1, 1, 1), length_mm=80, rng=np.random.default_rng(2))
    errors = _errors(cylinder)
    assert abs(errors.mean()) <= 0.1
    assert np.percentile(np.abs(errors), 95) <= 0.3
    assert np.abs(errors).max() <= 0.6


def test_missing_structures_are_clear_errors():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5] = 2
    with pytest.raises(InvalidInput, match="no blood pool"):
        wall_thickness(labels, (1, 1, 1))
    labels[labels == 2] = 1
    with pytest.raises(InvalidInput, match="no myocardium"):
        wall_thickness(labels, (1, 1, 1))


# --- torch backend (device=...): the same systems solved with torch -------------------------


@pytest.fixture
def one_torch_thread():
    """Torch on one thread (the test machine is shared), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_torch_matches_numpy(device: str) -> None:
    phantom = spherical_shell(8.0, 12.0, (1.0, 1.0, 1.5), rng=np.random.default_rng(3))
    labels, spacing = phantom.labels.array, phantom.labels.spacing
    reference = wall_thickness(labels, spacing)
    result = wall_thickness(labels, spacing, device=device)
    assert result.thickness_mm.dtype == np.float32
    assert np.array_equal(result.thickness_mm > 0, reference.thickness_mm > 0)
    assert np.abs(result.thickness_mm - reference.thickness_mm).max() <= 1e-3
    for key, value in reference.stats.items():
        assert result.stats[key] == pytest.approx(value, abs=1e-3)
    assert result.method["backend"] == "torch"
    assert result.method["device"].startswith(device)
    assert f"torch {result.method['device']}" in result.method["laplace_solver"]
    assert abs(result.method["laplace_iterations"] - reference.method["laplace_iterations"]) <= 2
    assert all(sweeps >= 1 for sweeps in result.method["path_sweeps"])
    assert reference.method["backend"] == "numba"


def test_torch_cpu_matches_numpy(one_torch_thread):
    _assert_torch_matches_numpy("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_torch_cuda_matches_numpy():
    _assert_torch_matches_numpy("cuda")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "meta"])
def test_invalid_device_is_a_clear_error(device):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[3:7, 3:7, 3:7] = 2
    labels[4:6, 4:6, 4:6] = 1
    with pytest.raises(ValueError, match="device"):
        wall_thickness(labels, (1, 1, 1), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[3:7, 3:7, 3:7] = 2
    labels[4:6, 4:6, 4:6] = 1
    with pytest.raises(ValueError, match="no CUDA GPU"):
        wall_thickness(labels, (1, 1, 1), device="cuda")


def test_measure_does_not_import_torch():
    code = "import sys, sitetune.measure.thickness; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
