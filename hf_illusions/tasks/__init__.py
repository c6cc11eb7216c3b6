"""What is scored: Dyck closing brackets, code prediction types, language-model tokens, the copying probe.

An empty package file, so that import-linter sees the layer.
"""
