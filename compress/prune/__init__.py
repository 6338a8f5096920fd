"""Pruning: masks (``masks.py``) that persist through fine-tuning (``persist.py``), second-order
saliency (``saliency.py``), and channel removal over coupled channel groups (``dependencies.py``,
``channels.py``); the verb is ``apply.prune_model_``."""
