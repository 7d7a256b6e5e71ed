"""Compiled kernels. Each module imports its compiler (Triton) at import time, so import them only
where they are used (``hlrm --help`` never loads them)."""
