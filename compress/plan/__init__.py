"""The planner: per-layer bits and sparsity chosen by an integer program under budgets."""
