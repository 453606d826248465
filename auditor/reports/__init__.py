"""Renderers of a certificate: Markdown, HTML, JUnit, the in-toto Statement, the terminal summary,
progress bars, and two certificates compared.
They read the certificate document and never decide anything."""
