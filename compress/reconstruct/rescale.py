"""Least-squares re-fit of the quantization scales once GPTQ has fixed the codes.

GPTQ chooses every block's scale before the sweep (from the weight it starts with) and then picks
codes on that grid while compensating. With the codes q fixed, a row's reconstruction
ŵ = Σ_j s_j·q⁽ʲ⁾ (q⁽ʲ⁾: the codes of block j, zero elsewhere) is linear in its block scales s, so the
scales that minimise the layer objective ½·(ŵ − w)·H·(ŵ − w)ᵀ solve the G×G normal equations

    A·s = b,   A_jk = q⁽ʲ⁾ᵀ·H·q⁽ᵏ⁾,   b_j = q⁽ʲ⁾ᵀ·H·w        (G blocks per row; per channel G = 1)

with H the damped statistics the sweep used. The old scales are one candidate, so the optimum never
raises the objective; a row whose optimum has a non-positive scale (or a singular A) keeps its old
scales. Blocks whose codes are all zero keep theirs (they do not affect ŵ). The re-fitted scales
reproduce the same codes: round(ŵ/s) = q. (The scale step of alternating code/scale fitting, as in
the "scale search" of GPTQ-style toolkits; here solved jointly per row in the H-norm.)
"""

from __future__ import annotations

import torch

ROW_CHUNK = 64  # rows solved at once (bounds the [rows, K, G] intermediate)


def refit_scales(rows: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """The scales [R, G] minimising ½·(ŵ − w)·H·(ŵ − w)ᵀ per row for fixed ``codes`` [R, K] (float,
    on blocks of K/G columns); ``rows`` [R, K] the target weights, ``hessian`` [K, K] positive definite."""
    count, columns = rows.shape
    blocks = scales.shape[1]
    width = columns // blocks
    fitted = scales.clone()
    grouped_hessian = hessian.reshape(columns, blocks, width)
    for start in range(0, count, ROW_CHUNK):
        part = slice(start, start + ROW_CHUNK)
        block_codes = codes[part].reshape(-1, blocks, width)
        h_q = torch.einsum("xkb,rkb->rxk", grouped_hessian, block_codes)  # columns of H·q⁽ᵏ⁾, [r, K, G]
        normal = torch.einsum("rja,rjak->rjk", block_codes, h_q.reshape(-1, blocks, width, blocks))
        right = torch.einsum("rxk,rx->rk", h_q, rows[part])
        used = (block_codes != 0).any(dim=2)
        eye = torch.eye(blocks, dtype=normal.dtype)
        normal = torch.where(used[:, :, None] & used[:, None, :], normal, eye)  # unused blocks: s_j = old
        right = torch.where(used, right, scales[part])
        solution, info = torch.linalg.solve_ex(normal, right)
        valid = (info == 0) & ((solution > 0) | ~used).all(dim=1) & torch.isfinite(solution).all(dim=1)
        fitted[part] = torch.where(valid[:, None], solution, scales[part])
    return fitted
