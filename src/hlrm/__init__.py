"""hlrm: collaborative metric learning recommenders with latent relations."""

import os

# PyTorch's OpenMP runtime spin-waits between parallel regions by default; on a machine with few
# or busy cores that makes training up to 10x slower. The runtime reads the variable once, when
# torch is first imported, so it is set here, before any hlrm module imports torch. A value the
# user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
