"""The data layer: Dyck and code corpora, their splits, Hub folders (with their dataset cards), tokenizers.

The bottom of the pipeline above the utilities (errors, paths, statistics, hub_ids, version): it
imports no other part of hf_illusions. An empty package file, so that import-linter sees the layer.
"""
