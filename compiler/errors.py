"""The one exception type lwc raises for user-facing failures.

Every failure a user can cause (bad model, unknown target, missing cross compiler,
version mismatch, ...) is raised as :class:`LwcError` with a one-line message. The CLI
prints ``lwc: error: <message>`` and exits with status 2; nothing else is printed.
"""


class LwcError(Exception):
    """A failure caused by input or environment, reported to the user as one line."""
