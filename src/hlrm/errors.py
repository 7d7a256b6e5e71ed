"""User-facing errors.

Every problem caused by input (a malformed file, an unknown name, an empty split, a diverging
loss) raises :class:`HlrmError` with one readable sentence; the CLI prints it and exits non-zero
without a traceback. Anything else is a bug and keeps its traceback.
"""


class HlrmError(Exception):
    """A problem with the user's input, data or run that the user can fix."""


class DataError(HlrmError):
    """Malformed, missing or unusable data."""


class UnknownIdError(DataError):
    """A user or item id the model was not trained with (a server answers 404 Not Found).

    ``kind`` is ``"user"`` or ``"item"``; ``ids`` lists every unknown id of the request.
    """

    def __init__(self, kind: str, ids: list[object]) -> None:
        self.kind = kind
        self.ids = list(ids)
        shown = ", ".join(repr(value) for value in self.ids[:5])
        more = f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else ""
        plural = "s" if len(self.ids) > 1 else ""
        super().__init__(f"unknown {kind} id{plural} {shown}{more}")


class ConfigError(HlrmError):
    """An invalid option, unknown model or dataset name, or an inconsistent configuration."""


class TrainingError(HlrmError):
    """Training could not continue (for example a NaN or infinite loss)."""
