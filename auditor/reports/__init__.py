"""Renderers of a certificate: Markdown, HTML, JUnit, the in-toto Statement, the terminal summary
and progress bars. They read the certificate document and never decide anything."""
