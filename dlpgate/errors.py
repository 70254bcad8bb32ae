"""Typed errors. The CLI turns any DlpgateError into one plain line and exit code 2.

Messages must never carry a full identifier (My Number, card number...): mask before raising.
"""


class DlpgateError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(DlpgateError):
    """A configuration file or key is invalid; the message names the key."""


class RuleError(DlpgateError):
    """A rule file is invalid; the message names the file and the key."""


class StoreError(DlpgateError):
    """The message store could not complete an operation (disk full, corrupt DB...)."""


class NotFound(DlpgateError):
    """No message with that id."""


class StateError(DlpgateError):
    """The message is not in a state that allows the requested transition."""


class PermissionDenied(DlpgateError):
    """The actor is not allowed to do this (wrong approver, self-approval, not the sender)."""


class InputError(DlpgateError):
    """Bad input on the command line or in a file given to the CLI."""


class Unavailable(DlpgateError):
    """The running gateway cannot be reached (its control socket is missing, refused or closed)."""
