"""Errors a user can act on: each message is one line naming the problem and the fix."""


class ProbeError(RuntimeError):
    """The probe cannot run here; str(err) is the one-line explanation shown to the user."""
