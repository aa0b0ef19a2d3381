"""Exception types: one for user mistakes, one for internal bugs (Polygraphy's split).

`FacemaskError` subclasses `ValueError` so callers that already catch `ValueError` keep working;
the CLI turns it into one clear line and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class FacemaskError(ValueError):
    """Bad input from the user: a file, an argument, an image, a model. The message says what to fix."""


class ModelFileError(FacemaskError):
    """A model file that is missing, unreadable, not a model, or from an incompatible version."""


class DataError(FacemaskError):
    """A dataset problem that stops the job (e.g. no images at all, an unknown class)."""


class InternalError(RuntimeError):
    """A bug in facemask-sdk itself; please report it."""
