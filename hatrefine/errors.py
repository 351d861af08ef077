"""The one exception type hatrefine raises for problems a user can fix."""


class HatrefineError(ValueError):
    """Bad input or missing resource; the message names the problem and the fix.

    The CLI prints it as a single line and exits non-zero (a traceback only with ``--debug``).
    """
