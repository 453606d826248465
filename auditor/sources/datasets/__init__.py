"""Data sets: the built-in ``digits``, data files and data folders (:mod:`auditor.sources.datasets.registry`)."""
