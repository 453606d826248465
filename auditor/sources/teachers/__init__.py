"""Teacher sources and teacher files (:mod:`auditor.sources.teachers.interface`)."""
