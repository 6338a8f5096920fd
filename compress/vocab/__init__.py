"""L0 vocabulary: the words every stage shares, defined once.

- ``layers``: the ONE predicate of a compressible layer (Conv2d and Linear);
- ``options``: ``LayerOption`` (one way to compress a layer), the pruning patterns;
- ``channels``: the ONE kept-channel rounding rule;
- ``targets``: the export target names;
- ``tracing``: the ONE torch.fx tracer and its failure policy;
- ``groups``: coupled channel groups (channels that must be removed together);
- ``costs``: the plain cost tables a backend hands the planner (``LatencyCosts``).
"""
