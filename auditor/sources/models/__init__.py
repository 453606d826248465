"""Model sources: where the latent means come from (:mod:`auditor.sources.models.interface`)."""
