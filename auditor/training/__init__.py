"""The reference trainer (``audit train``), its methods and protocols, ``audit reproduce``, and the
training-time monitor (plain PyTorch and Lightning)."""
