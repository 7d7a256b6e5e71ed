"""hlrm: collaborative metric learning recommenders with latent relations."""

__version__ = "0.1.0"
