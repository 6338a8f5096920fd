"""Low-rank factorisation, the third compression family (DESIGN §9): a Linear or Conv2d layer is
replaced by an ``nn.Sequential`` of two ordinary layers of rank r.

- ``size.py``: parameter counts and the rank limits (pure integers, no torch);
- ``settings.py``: ``LowRankSettings`` (rank or rank_ratio, method, damping), validated;
- ``factorize.py``: the truncated (weighted) SVD: plain, whitened (SVD-LLM), Fisher-weighted (FWSVD);
- ``drift.py``: drift-aware factors (``input_drift``): true-sequential, fitted to the float model's outputs;
- ``modules.py``: a layer's weight as per-group matrices and the two-layer replacement;
- ``fisher.py``: the output-side Fisher diagonal E[g²] of layer outputs;
- ``records.py`` / ``apply.py``: what was done per layer, and the verb ``apply_lowrank_``.
"""
