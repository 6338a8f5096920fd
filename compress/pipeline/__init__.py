"""L4 pipeline: the recipe-level verbs the CLI, the demo and ``import compress`` share.

``curvature.py`` measure curvature on a model and data; ``plan.py`` plan → recipe (and sweeps);
``apply.py`` apply a plan or recipe (in memory, or to a checkpoint directory); ``export.py``
export a model or checkpoint (typed artifact); ``evaluate.py`` evaluate a model on data;
``report.py`` a report from results in memory or from the files the CLI writes; ``inputs.py``
models and data as users hold them. Nothing here parses argv or prints tables.
"""
