"""Exceptions raised for problems a user can fix (bad files, bad options).

The command line prints these as one line, naming the file and the problem, and exits
with status 2; anything else is a bug and keeps its traceback.
"""


class CetMonaiError(Exception):
    """Base class of the errors the command line reports without a traceback."""


class TomogramError(CetMonaiError, ValueError):
    """A volume file that cannot be used: missing, unreadable, corrupt, 2D, NaN/Inf or constant.

    The message always starts with the path of the offending file.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutputExistsError(CetMonaiError, FileExistsError):
    """An output would overwrite an existing file (or the input) without ``overwrite=True``."""


class OptionError(CetMonaiError, ValueError):
    """An option or setting that cannot work (unknown key, impossible size, missing device, ...)."""


def user_error(error: BaseException) -> CetMonaiError | None:
    """The :class:`CetMonaiError` behind ``error``, if any: MONAI's config engine wraps the errors
    our components raise (``RuntimeError: Failed to evaluate ...`` from ``ValueError`` from ours)."""
    cause = error
    while cause is not None and not isinstance(cause, CetMonaiError):
        cause = cause.__cause__ or cause.__context__
    return cause
