"""Torch solvers for :mod:`sitetune.measure.thickness` (CPU or CUDA).

Imported lazily by ``wall_thickness(..., device=...)``, so that importing the measurement
code never imports torch. Both solve the same discrete equations as the numpy/numba code:

- **Laplace**: the same Jacobi-preconditioned float32 conjugate gradients as
  ``laplace._pcg`` (same start, stopping rule and iteration cap) on the matrix-free system
  ``laplace`` assembles, its product as a gather of the six neighbours.
  Convergence is read back to the host only every few iterations; the iterate is frozen
  on the device at the first iteration that meets the tolerance, so the result and the
  iteration count are those of stopping there.
- **Path lengths**: the upwind equations of ``path_lengths._upwind_pass``, triangular in
  order of the potential, solved by the Jacobi fixed point ``x <- step + C x`` built on the
  device from the cells' face arrays (gathers instead of a sequential pass), which is exact
  after as many sweeps as the longest dependency chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from sitetune.measure.laplace import LaplaceSystem

_CHECK_EVERY = 8  # iterations (sweeps) between reads of the convergence flag on the host
_SWEEP_TOLERANCE = 1e-6  # relative change below which the path-length sweeps have converged


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that can run the solvers; ValueError otherwise."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, but torch sees no CUDA GPU")
    index = torch.cuda.current_device() if resolved.index is None else resolved.index
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: no such GPU ({torch.cuda.device_count()} visible to torch)"
        )
    return torch.device("cuda", index)


def pcg(
    system: LaplaceSystem, x: np.ndarray, tolerance: float, device: torch.device
) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned conjugate gradients on ``system`` from the start ``x`` on
    ``device``: ``(x, iterations)``.

    The same recurrence, stopping rule (``r . D^-1 r <= tolerance^2 rhs . D^-1 rhs``)
    and cap (``20 n`` iterations) as ``laplace._pcg``, in float32; the matrix product
    gathers the six neighbours of every cell (a padded zero where there is none).
    """
    n = x.size
    cell = np.arange(n, dtype=np.int64)
    neighbour = np.column_stack([system.across, cell - 1, cell + 1])
    present = (system.faces[:, None] >> np.arange(6, dtype=np.uint8)) & 1 == 1
    neighbour = torch.from_numpy(np.where(present, neighbour, n)).to(device)
    coefficient = torch.from_numpy(np.repeat(system.conductance, 2)).to(device)
    diagonal, b, x = (
        torch.from_numpy(a).to(device, copy=True) for a in (system.diagonal, system.rhs, x)
    )
    padded = torch.zeros(n + 1, dtype=x.dtype, device=device)

    def apply(p: torch.Tensor) -> torch.Tensor:
        padded[:n] = p
        return diagonal * p - (padded[neighbour] * coefficient).sum(1)

    r = b - apply(x)
    p = r / diagonal
    rz = r.dot(p)
    goal = tolerance**2 * b.dot(b / diagonal)
    active = torch.ones((), dtype=torch.bool, device=device)  # not yet converged
    iterations = torch.zeros((), dtype=torch.int64, device=device)
    cap = 20 * n
    for iteration in range(1, cap + 1):
        q = apply(p)
        # Once converged, alpha = 0 and beta = 0 leave x and r as they were (and p finite).
        alpha = torch.where(active, rz / p.dot(q), 0.0)
        x.add_(alpha * p)
        r.sub_(alpha * q)
        z = r / diagonal
        rz_new = r.dot(z)
        iterations += active
        active &= rz_new > goal
        p.mul_(torch.where(active, rz_new / rz, 0.0)).add_(z)
        rz = rz_new
        if (iteration % _CHECK_EVERY == 0 or iteration == cap) and not active.item():
            return x.cpu().numpy(), int(iterations.item())
    raise RuntimeError("Laplace solve did not converge")


def upwind_path_lengths(
    tangent: np.ndarray,
    cell: np.ndarray,
    kind: np.ndarray,
    distance: np.ndarray,
    order: np.ndarray,
    max_step: float,
    device: torch.device,
) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """``path_lengths._upwind_pass`` for both surfaces as Jacobi sweeps on ``device``:
    ``((L0, sweeps), (L1, sweeps))`` -- ``L0`` from the inner surface (kind 1) visiting
    cells in ``order``, ``L1`` from the outer one (kind 2) in reverse ``order``.

    A cell reads an upwind wall neighbour only where the neighbour comes earlier in its
    visiting order, so the system is triangular in that order and ``x <- step + C x`` is
    exact after as many sweeps as its longest dependency chain. The sweeps stop when one
    changes ``x`` by at most ``1e-6 max|x|`` (checked every few sweeps); RuntimeError
    after ``n`` sweeps without that. The arguments are the `surfaces.Links` arrays.
    """
    arrays = [torch.from_numpy(a).to(device) for a in (tangent, cell, kind, distance)]
    position = torch.empty(order.size, dtype=torch.int64, device=device)
    position[torch.from_numpy(order).to(device)] = torch.arange(order.size, device=device)
    return tuple(
        _upwind_sweeps(*arrays, position, boundary_kind, direction, max_step)
        for boundary_kind, direction in ((1, 1), (2, -1))
    )


def _upwind_sweeps(
    tangent: torch.Tensor,
    cell: torch.Tensor,
    kind: torch.Tensor,
    distance: torch.Tensor,
    position: torch.Tensor,
    boundary_kind: int,
    direction: int,
    max_step: float,
) -> tuple[np.ndarray, int]:
    """One surface's upwind path lengths (`upwind_path_lengths`): ``(L, sweeps)``."""
    component = direction * tangent
    face = 2 * torch.arange(3, device=tangent.device) + (component < 0)  # upwind face per axis
    neighbour = torch.take_along_dim(cell, face, 1)
    neighbour_kind = torch.take_along_dim(kind, face, 1)
    weight = component.abs() / torch.take_along_dim(distance, face, 1)
    moving = weight != 0
    neighbour = neighbour.clamp(min=0)  # -1 (no wall neighbour) is masked out below
    earlier = (neighbour_kind == 0) & moving
    earlier &= direction * position[neighbour] < direction * position[:, None]
    used = earlier | ((neighbour_kind == boundary_kind) & moving)
    diag = torch.where(used, weight, 0.0).sum(1)
    diag = torch.where(diag == 0, 1.0, diag)
    coefficient = torch.where(earlier, weight / diag[:, None], 0.0)
    step = torch.clamp(1.0 / diag, max=max_step)
    x = step  # the first sweep from zero
    n = step.numel()
    for sweep in range(2, n + 1):
        x_new = step + (coefficient * x[neighbour]).sum(1)
        if sweep % _CHECK_EVERY == 0 or sweep == n:
            change = (x_new - x).abs().max()
            if bool(change <= _SWEEP_TOLERANCE * x_new.abs().max()):
                return x_new.cpu().numpy(), sweep
        x = x_new
    if n == 1:
        return x.cpu().numpy(), 1
    raise RuntimeError(f"path-length sweeps did not converge in {n} sweeps")
