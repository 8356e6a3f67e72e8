"""Torch solvers for :mod:`sitetune.measure.thickness` (CPU or CUDA).

Imported lazily by ``wall_thickness(..., device=...)``, so that importing the measurement
code never imports torch. The systems are assembled by the scipy code; only their
solution runs here:

- **Laplace**: the same Jacobi-scaled float32 conjugate gradients as ``thickness._cg``
  (same start, stopping rule and iteration cap), with the matrix as a sparse CSR tensor.
  Convergence is read back to the host only every few iterations; the iterate is frozen
  on the device at the first iteration that meets the tolerance, so the result and the
  iteration count are those of stopping there.
- **Path lengths**: the unit lower-triangular upwind system ``A x = b`` is solved by the
  Jacobi fixed point ``x <- b + (I - A) x``, which is exact after as many sweeps as the
  longest dependency chain (sparse matvecs instead of a sequential triangular solve).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

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


def to_torch_csr(matrix: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on ``device`` (same dtype)."""
    index = np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index)),
            torch.from_numpy(matrix.indices.astype(index)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            check_invariants=False,
        ).to(device)


def cg(
    matrix: sp.csr_matrix, rhs: np.ndarray, x: np.ndarray, tolerance: float, device: torch.device
) -> tuple[np.ndarray, int]:
    """Conjugate gradients from the start ``x`` on ``device``: ``(x, iterations)``.

    The same recurrence, stopping rule (``|r|^2 <= (tolerance |rhs|)^2``) and cap
    (``20 n`` iterations) as ``thickness._cg``, in the dtype of ``matrix``.
    """
    a = to_torch_csr(matrix, device)
    b = torch.from_numpy(rhs).to(device)
    x = torch.from_numpy(x).to(device, copy=True)
    r = b - a @ x
    p = r.clone()
    rr = r.dot(r)
    goal = (tolerance * torch.linalg.vector_norm(b)) ** 2
    active = torch.ones((), dtype=torch.bool, device=device)  # not yet converged
    iterations = torch.zeros((), dtype=torch.int64, device=device)
    cap = 20 * rhs.size
    for iteration in range(1, cap + 1):
        q = a @ p
        # Once converged, alpha = 0 and beta = 0 leave x and r as they were (and p finite).
        alpha = torch.where(active, rr / p.dot(q), 0.0)
        x.add_(alpha * p)
        r.sub_(alpha * q)
        rr_new = r.dot(r)
        iterations += active
        active &= rr_new > goal
        p.mul_(torch.where(active, rr_new / rr, 0.0)).add_(r)
        rr = rr_new
        if (iteration % _CHECK_EVERY == 0 or iteration == cap) and not active.item():
            return x.cpu().numpy(), int(iterations.item())
    raise RuntimeError("Laplace solve did not converge")


def solve_unit_lower(
    matrix: sp.csr_matrix, rhs: np.ndarray, device: torch.device
) -> tuple[np.ndarray, int]:
    """Solve ``matrix @ x = rhs`` (unit lower-triangular; its diagonal is not read) by
    Jacobi sweeps ``x <- rhs + (I - matrix) x`` on ``device``: ``(x, sweeps)``.

    Stops when a sweep changes ``x`` by at most ``1e-6 max|x|`` (exactly once every
    dependency chain has been traversed); RuntimeError after ``n`` sweeps without that.
    """
    n = rhs.size
    strict = -sp.tril(matrix, k=-1, format="csr")
    strict.sort_indices()
    a = to_torch_csr(strict, device)
    b = torch.from_numpy(rhs).to(device)
    x = b.clone()  # the first sweep from zero
    for sweep in range(1, n + 1):
        x_new = torch.addmv(b, a, x)
        if sweep % _CHECK_EVERY == 0 or sweep == n:
            change = (x_new - x).abs().max()
            if bool(change <= _SWEEP_TOLERANCE * x_new.abs().max()):
                return x_new.cpu().numpy(), sweep
        x = x_new
    raise RuntimeError(f"path-length sweeps did not converge in {n} sweeps")
