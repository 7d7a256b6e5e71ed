"""hlrm: collaborative metric learning recommenders with latent relations."""

from hlrm.threads import set_thread_defaults

# Before any hlrm module imports torch: its OpenMP runtime reads the settings once, at import.
set_thread_defaults()

__version__ = "0.1.0"
