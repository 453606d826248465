"""The mathematics of the certificate (docs/mathematics.md): the simplex witness, the streaming state and its
merge, the numbers and the verdict, the margin–energy design path, and the certificate document
with its checker. Nothing here reads a user's file.
"""

from .._compat import package_attribute


def __getattr__(name: str):
    return package_attribute(__name__, name)  # the names of the old module auditor/certificate.py
