"""Sub-voxel surface crossings fitted to the staircase of a binary region.

A label map says of a surface only between which two voxel centres it passes, column by
column: along a lattice column that crosses it, the surface lies between the last voxel on
one side and the first on the other, an interval one spacing long. Near a summit (a
surface nearly parallel to a lattice plane) many neighbouring columns share the same
interval, a flat terrace; a smoothing of the indicator sees the terrace and puts the surface
at its middle, up to half a voxel off, and it shifts curved surfaces towards their centre of
curvature. The sub-voxel height of a terrace is in the terrace *widths*, i.e. in the
intervals of the columns around it, which a fit can use and a smoothing cannot.

Here the surface around a boundary link is a height field over the plane across its
dominant normal axis ``c`` (the largest component of the smoothed indicator's gradient),
``h(u, v) = a0 + a1 u + a2 v + a3 u^2 + a4 uv + a5 v^2``, fitted to the intervals of
the columns along ``c`` in a disc around the link: the analytic centre of the intervals
(the maximum of the sum of the log slacks, with the barrier continued quadratically below
a small slack so that a window no quadric fits exactly still gives an answer), by
Newton's method from the least-squares fit to the interval midpoints. The disc grows with
the surface's radius of curvature ``R`` (from a first fit in a small disc), so that the
quadric's neglected quartic term stays small on a tight curve while a wide summit is seen
out to its terrace edges: `ISOTROPIC` uses ``0.63 R^0.75`` mm from 5 to 10 mm and a
barrier below 0.05 voxel; `COARSE_SLICES` (in-plane links of a volume with coarse
slices, whose terraces span a slice step) ``0.9 R^0.75`` from 6 to 20 mm and 0.01 voxel.

The crossing on a link is where the fitted height field meets the link segment. A lattice
plane's interval midpoints are coplanar and the analytic centre of intervals symmetric
about a plane is that plane, so planes of any orientation land at the middle of their
lattice ambiguity, as with the smoothing. Links whose wall voxels lie in one block about
3 mm wide (3^3 voxels at 1 mm) and share a height axis share one fit. Where a fit fails
(too few columns, no root on the link; with `ISOTROPIC` also a crossing well outside its
link) the caller's estimate is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

_SEARCH = 6  # voxels searched along a column, either side of the tangent plane
_NEWTON_STEPS = 8


@dataclass(frozen=True)
class FitSettings:
    """How the surfaces are fitted.

    Attributes:
        first_window_mm: disc radius of the first fit (which estimates the radius of
            curvature ``R``), and the smallest final one.
        gain: final disc radius ``gain * R^0.75`` mm, clipped to the first and the largest.
        largest_window_mm: the largest final disc radius.
        barrier_voxels: slack (in voxels of the finest axis) below which the log barrier
            continues quadratically.
        keep_out_of_range: a crossing outside ``[-0.25, 1.25]`` of its link is returned as
            is (for the caller to clip) rather than replaced by the fallback.
        block_mm: links whose ``here`` voxels share a block about this wide (a whole
            number of voxels along each axis) and a height axis share one fit.
    """

    first_window_mm: float = 5.0
    gain: float = 0.63
    largest_window_mm: float = 10.0
    barrier_voxels: float = 0.05
    keep_out_of_range: bool = False
    block_mm: float = 3.0


#: Near-isotropic spacing: every link.
ISOTROPIC = FitSettings()
#: Coarse slices (in-plane links only, see ``thickness``): a terrace spans a whole slice
#: step, so the windows are wider, and a pole's one-slice island, whose contour sits a few
#: hundredths of a voxel past its slice, needs the narrower barrier to be seen at all.
COARSE_SLICES = FitSettings(6.0, 0.9, 20.0, 0.01, keep_out_of_range=True)


def fitted_crossings(
    region: np.ndarray,
    spacing: np.ndarray,
    here: np.ndarray,
    there: np.ndarray,
    gradient: np.ndarray,
    fallback: np.ndarray,
    settings: FitSettings = ISOTROPIC,
) -> np.ndarray:
    """Fraction of each link from ``here`` (outside ``region``) to ``there`` (inside) at
    which the fitted surface crosses it; ``fallback`` where no fit answers.

    Args:
        region: boolean ``(X, Y, Z)`` mask; ``here``/``there`` are flat (C-order) indices.
        spacing: voxel size in mm.
        gradient: ``(n, 3)`` gradient of the region's smoothed indicator (pointing into the
            region) summed over the two ends of each link, per mm.
        fallback: the caller's estimate of every link's fraction.
        settings: window sizes and barrier (`ISOTROPIC` or `COARSE_SLICES`).
    """
    if here.size == 0:
        return fallback
    shape = np.array(region.shape, dtype=np.int64)
    height_axis = np.argmax(np.abs(gradient), axis=1)
    position = np.array(np.unravel_index(here, region.shape))
    block = np.maximum(1, np.round(settings.block_mm / np.asarray(spacing))).astype(np.int64)
    blocks = shape // block + 1
    key = height_axis
    for axis in range(3):
        key = key * blocks[axis] + position[axis] // block[axis]
    order = np.argsort(key, kind="stable")
    first = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    start = np.r_[first, order.size].astype(np.int64)
    members = np.diff(start)
    normal = np.add.reduceat(gradient[order], first, axis=0)
    normal /= np.linalg.norm(normal, axis=1)[:, None] + 1e-12
    # each group's fit is centred on the member nearest the group's mean position
    place = position[:, order].T.astype(np.float64)
    mean = np.add.reduceat(place, first, axis=0) / members[:, None]
    spread = ((place - np.repeat(mean, members, axis=0)) ** 2).sum(1)
    group = np.repeat(np.arange(first.size), members)
    nearest = np.lexsort((spread, group))[first]
    theta = np.empty(order.size)
    _fit_groups(
        np.ascontiguousarray(region).ravel(), shape, np.asarray(spacing, np.float64),
        here[order][nearest], height_axis[order][first], normal, start,
        here[order], there[order], min(first.size, 8 * numba.get_num_threads()),
        np.array([settings.first_window_mm, settings.gain, settings.largest_window_mm,
                  settings.barrier_voxels]),
        theta,
    )  # fmt: skip
    out = np.empty(order.size)
    out[order] = theta
    failed = ~np.isfinite(out)
    if not settings.keep_out_of_range:
        failed |= (out < -0.25) | (out > 1.25)
    out[failed] = fallback[failed]
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _fit_groups(
    region, shape, spacing, centre, height_axis, normal, start, here, there, chunks, window, theta
):  # pragma: no cover (compiled)
    """Fit every group's height field and intersect its links (NaN where it cannot);
    the groups are split into ``chunks`` run in parallel. ``window``: the `FitSettings`
    (first window, gain, largest window, barrier)."""
    groups = centre.shape[0]
    reach = int(window[2] / spacing.min()) + 1
    for chunk in numba.prange(chunks):
        # per column: design row (6), interval low and high, squared radius
        table = np.empty(((2 * reach + 1) ** 2, 9))
        used = np.empty_like(table)
        for g in range(chunk * groups // chunks, (chunk + 1) * groups // chunks):
            origin = _unflatten(centre[g], shape)
            a = _fit_group(
                region, shape, spacing, origin, height_axis[g], normal[g], window, table, used
            )
            for link in range(start[g], start[g + 1]):
                theta[link] = _crossing_of(
                    a, shape, spacing, origin, height_axis[g], here[link], there[link]
                )


@numba.njit(cache=True)
def _fit_group(region, shape, spacing, here, c, normal, window, table, used):  # pragma: no cover
    """The height-field coefficients of one group, centred on voxel ``here`` (NaN if too
    few columns, or if its links' normals cancel, as on both sides of a one-voxel
    structure)."""
    first, gain, largest, barrier = window[0], window[1], window[2], window[3] * spacing.min()
    a = np.empty(6)
    if abs(normal[c]) < 1e-3:
        a[:] = np.nan
        return a
    count = _columns(region, shape, spacing, here, c, normal, first, table)
    m = _within(table, count, first, used)
    radius = first
    if m >= 6:
        _analytic_centre(used, m, 0, barrier, a)
        half_trace = 0.5 * (a[3] + a[5])
        root = np.sqrt(max(half_trace * half_trace - (a[3] * a[5] - 0.25 * a[4] * a[4]), 0.0))
        curvature = 2.0 * (abs(half_trace) + root)  # largest |eigenvalue| of h's Hessian
        bend = gain * (1.0 / max(curvature, 1e-6)) ** 0.75
        radius = min(max(bend, first), largest)
    if radius > first:
        count = _columns(region, shape, spacing, here, c, normal, radius, table)
    m = _within(table, count, radius, used)
    if m < 6:
        a[:] = np.nan
    else:
        _analytic_centre(used, m, _NEWTON_STEPS, barrier, a)
    return a


@numba.njit(cache=True)
def _unflatten(flat, shape):  # pragma: no cover (compiled)
    return np.array([flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]])


@numba.njit(cache=True)
def _columns(region, shape, spacing, here, c, normal, radius, table):  # pragma: no cover
    """Fill ``table`` with the interval of every column along axis ``c`` within ``radius`` mm
    of ``here`` (in the plane across ``c``): the crossing nearest the tangent plane with
    the region on the normal's side. Returns the number of columns."""
    u, v = (c + 1) % 3, (c + 2) % 3
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    rising = normal[c] > 0  # the region lies towards +c
    reach_u, reach_v = int(radius / spacing[u]), int(radius / spacing[v])
    count = 0
    for du in range(-reach_u, reach_u + 1):
        iu = here[u] + du
        if iu < 0 or iu >= shape[u]:
            continue
        x = du * spacing[u]
        for dv in range(-reach_v, reach_v + 1):
            iv = here[v] + dv
            y = dv * spacing[v]
            if iv < 0 or iv >= shape[v] or x * x + y * y > radius * radius:
                continue
            plane = -(normal[u] * x + normal[v] * y) / normal[c]
            base = iu * strides[u] + iv * strides[v]
            # candidates in order of distance from the tangent plane (ties: the lower one)
            best, nearest = _nearest_crossing(
                region, shape, strides, base, here[c], c, plane, spacing[c], rising
            )
            if nearest < 0:
                continue
            row = table[count]
            row[0], row[1], row[2] = 1.0, x, y
            row[3], row[4], row[5] = x * x, x * y, y * y
            row[6], row[7] = best * spacing[c], (best + 1) * spacing[c]
            row[8] = x * x + y * y
            count += 1
    return count


@numba.njit(cache=True)
def _nearest_crossing(
    region, shape, strides, base, start, c, plane, step, rising
):  # pragma: no cover
    """The column's crossing (``region`` entered going towards +c if ``rising``, else
    left) nearest the tangent plane's height ``plane`` (mm), within `_SEARCH` voxels:
    ``(k, distance)`` with the crossing between voxels ``start + k`` and ``start + k + 1``;
    distance -1 if there is none."""
    lowest = int(np.floor(plane / step)) - _SEARCH
    below = int(np.floor(plane / step - 0.5))  # candidates below the plane, going down
    above = below + 1  # ... and above it, going up
    while below >= lowest or above <= lowest + 2 * _SEARCH:
        if above > lowest + 2 * _SEARCH or (
            below >= lowest and plane - (below + 0.5) * step <= (above + 0.5) * step - plane
        ):
            k, below = below, below - 1
        else:
            k, above = above, above + 1
        index = start + k
        if index < 0 or index + 1 >= shape[c]:
            continue
        first = region[base + index * strides[c]]
        second = region[base + (index + 1) * strides[c]]
        if (rising and second and not first) or (not rising and first and not second):
            return k, abs((k + 0.5) * step - plane)
    return 0, -1.0


@numba.njit(cache=True)
def _within(table, count, radius, used):  # pragma: no cover (compiled)
    """Copy the columns within ``radius`` mm to ``used``; how many."""
    m = 0
    for j in range(count):
        if table[j, 8] <= radius * radius:
            used[m] = table[j]
            m += 1
    return m


@numba.njit(cache=True, inline="always")
def _log_barrier(slack, eps):  # pragma: no cover (compiled)
    """log(slack) and its first two derivatives (negated second), quadratic below eps."""
    if slack >= eps:
        return np.log(slack), 1.0 / slack, 1.0 / (slack * slack)
    d = slack - eps
    return (
        np.log(eps) + d / eps - 0.5 * d * d / (eps * eps),
        1.0 / eps - d / (eps * eps),
        1.0 / (eps * eps),
    )


@numba.njit(cache=True)
def _height(row, a):  # pragma: no cover (compiled)
    return (
        row[0] * a[0]
        + row[1] * a[1]
        + row[2] * a[2]
        + row[3] * a[3]
        + row[4] * a[4]
        + row[5] * a[5]
    )


@numba.njit(cache=True)
def _analytic_centre(columns, m, steps, eps, a):  # pragma: no cover (compiled)
    """Coefficients ``a`` maximising ``sum(log(h - low) + log(high - h))`` over the first
    ``m`` rows of ``columns`` (design row, low, high), the logarithm continued
    quadratically below ``eps`` mm: ``steps`` damped Newton steps from the least-squares
    fit to the interval midpoints."""
    hessian = np.zeros((6, 6))
    grad = np.zeros(6)
    for j in range(m):
        middle = 0.5 * (columns[j, 6] + columns[j, 7])
        for p in range(6):
            grad[p] += columns[j, p] * middle
            for q in range(p + 1):
                hessian[p, q] += columns[j, p] * columns[j, q]
    _solve_spd(hessian, grad, a)
    step = np.empty(6)
    trial = np.empty(6)
    value = _barrier_value(columns, m, a, eps) if steps > 0 else 0.0
    for _ in range(steps):
        hessian[:] = 0.0
        grad[:] = 0.0
        for j in range(m):
            h = _height(columns[j], a)
            _, d1, c1 = _log_barrier(h - columns[j, 6], eps)
            _, d2, c2 = _log_barrier(columns[j, 7] - h, eps)
            for p in range(6):
                grad[p] += (d1 - d2) * columns[j, p]
                for q in range(p + 1):
                    hessian[p, q] += (c1 + c2) * columns[j, p] * columns[j, q]
        _solve_spd(hessian, grad, step)
        decrement = 0.0
        for p in range(6):
            decrement += step[p] * grad[p]
        if decrement < 1e-8:
            break
        t = 1.0
        for _ in range(12):  # backtracking line search (Armijo)
            for p in range(6):
                trial[p] = a[p] + t * step[p]
            new = _barrier_value(columns, m, trial, eps)
            if new >= value + 0.25 * t * decrement:
                break
            t *= 0.5
        else:  # no step accepted: take the last, halved once more
            new = np.nan
        for p in range(6):
            a[p] += t * step[p]
        value = new if not np.isnan(new) else _barrier_value(columns, m, a, eps)


@numba.njit(cache=True)
def _barrier_value(columns, m, a, eps):  # pragma: no cover (compiled)
    """The objective of `_analytic_centre` at coefficients ``a``."""
    value = 0.0
    for j in range(m):
        h = _height(columns[j], a)
        s1 = h - columns[j, 6]
        s2 = columns[j, 7] - h
        if s1 >= eps and s2 >= eps:
            value += np.log(s1 * s2)
        else:
            value += _log_barrier(s1, eps)[0] + _log_barrier(s2, eps)[0]
    return value


@numba.njit(cache=True)
def _solve_spd(matrix, rhs, out):  # pragma: no cover (compiled)
    """``out = matrix^-1 rhs`` for a small symmetric positive (semi)definite matrix given
    by its lower triangle (Cholesky, with a tiny ridge)."""
    n = rhs.shape[0]
    lower = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            total = matrix[i, j] + (1e-9 if i == j else 0.0)
            for k in range(j):
                total -= lower[i, k] * lower[j, k]
            if i == j:
                lower[i, i] = np.sqrt(max(total, 1e-12))
            else:
                lower[i, j] = total / lower[j, j]
    for i in range(n):
        total = rhs[i]
        for k in range(i):
            total -= lower[i, k] * out[k]
        out[i] = total / lower[i, i]
    for i in range(n - 1, -1, -1):
        total = out[i]
        for k in range(i + 1, n):
            total -= lower[k, i] * out[k]
        out[i] = total / lower[i, i]


@numba.njit(cache=True)
def _crossing_of(a, shape, spacing, origin, c, here, there):  # pragma: no cover (compiled)
    """Fraction of the segment ``here -> there`` (flat indices) where ``h(u, v)``
    (coefficients ``a``, origin at voxel ``origin``) meets it: the root of a quadratic
    nearest the middle."""
    if np.isnan(a[0]):
        return np.nan
    start, end = _unflatten(here, shape), _unflatten(there, shape)
    u, v = (c + 1) % 3, (c + 2) % 3
    pu, pv, pc = [(start[k] - origin[k]) * spacing[k] for k in (u, v, c)]
    du, dv, dc = [(end[k] - start[k]) * spacing[k] for k in (u, v, c)]
    # h(pu + t du, pv + t dv) - (pc + t dc) = qa t^2 + qb t + qc
    qc = a[0] + a[1] * pu + a[2] * pv + a[3] * pu * pu + a[4] * pu * pv + a[5] * pv * pv - pc
    qb = (
        a[1] * du + a[2] * dv + 2 * a[3] * pu * du + a[4] * (pu * dv + pv * du)
        + 2 * a[5] * pv * dv - dc
    )  # fmt: skip
    qa = a[3] * du * du + a[4] * du * dv + a[5] * dv * dv
    if abs(qa) < 1e-12:
        return -qc / qb if abs(qb) > 1e-12 else np.nan
    disc = qb * qb - 4 * qa * qc
    if disc < 0:
        return -qb / (2 * qa)
    root = np.sqrt(disc)
    t1, t2 = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    return t1 if abs(t1 - 0.5) < abs(t2 - 0.5) else t2
