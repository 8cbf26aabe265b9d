"""How the demo reports failures: one line, raised for API callers, kept in the status line for the browser."""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

import gradio as gr

from handos.errors import HandosError, InputError

log = logging.getLogger("handos.demo")


class BadUpload(InputError):
    """The uploaded file itself cannot be used (empty, broken, not an image): the browser drops its preview."""


def one_line(text: str) -> str:
    """The first non-empty line of a message, trimmed."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:500]
    return "error"


def message_of(err: BaseException) -> str:
    """The one line a user reads for an exception (internal errors name only their type; the log has the rest)."""
    if isinstance(err, gr.Error):
        return one_line(err.message)
    if isinstance(err, HandosError):
        return one_line(str(err))
    if isinstance(err, MemoryError):
        return "out of memory on the server; try a smaller image or clip"
    return f"internal error ({type(err).__name__}); the server log has the details"


def user_errors(fn: Callable) -> Callable:
    """For API endpoints: turn any failure into a one-line gr.Error (tracebacks go to the log only)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (HandosError, MemoryError) as err:
            raise gr.Error(message_of(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the user gets one line, the log the traceback
            log.exception("demo callback %s failed", fn.__name__)
            raise gr.Error(message_of(err), print_exception=False) from None

    return wrapper


def errors_in_view(fn: Callable, on_error: Callable[[str, BaseException], tuple]) -> Callable:
    """For browser events: a failure returns `on_error(message, error)` (outputs cleared, the message kept in view)
    instead of a toast that fades and leaves stale results beside it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, HandosError, MemoryError) as err:
            return on_error(message_of(err), err)
        except Exception as err:  # noqa: BLE001 - the user gets one line, the log the traceback
            log.exception("demo callback %s failed", fn.__name__)
            return on_error(message_of(err), err)

    return wrapper


def error_status(message: str) -> str:
    """The status line of a failed run (Markdown)."""
    return f"**Error:** {message}"


# Label Studio's library messages speak to the command line; the panel has fields instead of flags
_PANEL_WORDING = (
    (r"set LABEL_STUDIO_API_KEY to the token under Account & Settings",
     "paste the access token from Label Studio (Account & Settings) into the API key field"),
    (r"set LABEL_STUDIO_API_KEY to a current token", "paste a current access token into the API key field"),
    (r"no Label Studio API key: set LABEL_STUDIO_API_KEY \(Account & Settings -> Access Token\)",
     "no API key: paste the access token from Label Studio (Account & Settings) into the API key field"),
    (r"no Label Studio URL: pass --ls-url http://HOST:PORT \(or set LABEL_STUDIO_URL\)",
     "no Label Studio URL: fill in the URL field, e.g. http://127.0.0.1:8080"),
    (r"is the server running and --ls-url right\?", "is Label Studio running, and is the URL field right?"),
    (r"Re-run to continue: nothing pushed is lost", "press Push again once it is: nothing pushed is lost"),
    (r"check --ls-url and --project", "check the URL and Project fields"),
    (r"check --ls-url", "check the URL field"),
    (r"--ls-url must be", "the URL must be"),
    (r"; pass --create to make it", ""),
    (r"re-run to retry", "press Push again to retry"),
    (r"re-run to continue", "press Push again to continue"),
)


def panel_message(message: str, secret: str = "") -> str:
    """A Label Studio error worded for the demo's panel (fields, not command-line flags), the key masked."""
    text = one_line(message)
    for pattern, words in _PANEL_WORDING:
        text = re.sub(pattern, words, text)
    if secret:
        text = text.replace(secret, "***")
    return text


def panel_error(message: str) -> str:
    """The Label Studio panel's Markdown for a failed push."""
    return f"**Not pushed:** {message}"


__all__ = ["BadUpload", "errors_in_view", "error_status", "message_of", "one_line", "panel_error",
           "panel_message", "user_errors"]

