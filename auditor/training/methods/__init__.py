"""Training methods: one module per family, one explicit registry (:mod:`auditor.training.methods.registry`)."""
