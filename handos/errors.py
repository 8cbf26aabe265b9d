"""Errors raised by handos: one base class, one-line messages, entry points print them cleanly."""
from __future__ import annotations


class HandosError(Exception):
    """Base class of every error handos raises on purpose; its message is one line for the user."""


class InputError(HandosError):
    """The input (file, image, clip, manifest, argument) is unusable; the message says what to do."""


class ModelError(HandosError):
    """Weights are missing, corrupt or incompatible, or the model cannot run on the asked device."""


class DeviceError(HandosError):
    """The asked device is unknown or unavailable here (e.g. 'cuda' on a machine without a GPU)."""


class ConfigError(HandosError):
    """A configuration file or option is invalid."""


class RemoteError(HandosError):
    """A remote service (Label Studio, the Hub) is unreachable or refused the request."""
