"""User-facing errors.

Every problem caused by input (a malformed file, an unknown name, an empty split, a diverging
loss) raises :class:`HlrmError` with one readable sentence; the CLI prints it and exits non-zero
without a traceback. Anything else is a bug and keeps its traceback.
"""


class HlrmError(Exception):
    """A problem with the user's input, data or run that the user can fix."""


class DataError(HlrmError):
    """Malformed, missing or unusable data."""


class ConfigError(HlrmError):
    """An invalid option, unknown model or dataset name, or an inconsistent configuration."""


class TrainingError(HlrmError):
    """Training could not continue (for example a NaN or infinite loss)."""
