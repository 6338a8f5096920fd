"""L3 files: the compressed checkpoint directory (``format.py``), rebuilding pruned widths
(``resize.py``) and ``load_model`` (a checkpoint directory or any float model spec)."""
