"""Wall thickness on analytic phantoms (exact answers), errors in voxels of the finest axis.

These pin the solver's accuracy on representative rows; the full table, against pyezzi,
is ``bench/thickness.py`` (``bench/results/thickness.json``).
"""

from __future__ import annotations

import numpy as np
import pytest

from sitetune.errors import InvalidInput
from sitetune.imaging.phantoms.analytic import cylindrical_shell, slab, spherical_shell
from sitetune.measure.thickness import wall_thickness


def _errors(phantom) -> np.ndarray:
    result = wall_thickness(phantom.labels.array, phantom.labels.spacing)
    return (result.thickness_mm[phantom.valid] - phantom.thickness_mm) / min(phantom.labels.spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 0.7), (1.0, 1.0, 2.0)])
def test_spherical_shell(spacing):
    errors = _errors(
        spherical_shell(20 * max(spacing), 30 * max(spacing), spacing, rng=np.random.default_rng(1))
    )
    assert abs(errors.mean()) <= 0.1
    assert np.percentile(np.abs(errors), 95) <= 0.35


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
