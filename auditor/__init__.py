"""vae-audit: certify trained VAEs against exact constant collapse of the encoder mean."""

__version__ = "0.1.0"
