"""One error taxonomy for the whole of OpenCDP.

Every failure is sorted by what the caller does next::

    OpenCDPError
     ├── Rejected    the input is wrong: answer 4xx, keep the input where an operator can see it
     ├── Transient   the input is fine, something around it is not (disk, engine): retry later, answer 503
     └── Terminal    retrying cannot help (bad configuration, corrupt state): stop and report

Each carries a stable machine ``code`` (what API answers and logs show) and never the payload itself,
so no PII reaches a log line through an exception message.
"""

from __future__ import annotations


class OpenCDPError(Exception):
    """Root of every error OpenCDP raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class Rejected(OpenCDPError):
    """The caller sent something we will not accept as it is (HTTP 4xx)."""

    code = "rejected"

    def __init__(self, message: str, *, code: str | None = None, status: int = 400) -> None:
        super().__init__(message, code=code)
        self.status = status


class Transient(OpenCDPError):
    """A temporary failure: the same call may succeed later (HTTP 503 with Retry-After)."""

    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Terminal(OpenCDPError):
    """A failure that retrying cannot fix (configuration, corrupt state)."""

    code = "terminal"


class UnreadableInput(Terminal):
    """The engine refused the data itself (a malformed bulk file): the same input will fail again."""

    code = "unreadable_input"


class EngineError(Transient):
    """The storage engine failed while running a statement; the statement is kept for diagnosis."""

    code = "engine_error"

    def __init__(self, message: str, *, sql: str) -> None:
        super().__init__(f"{message}\n-- while running:\n{sql}")
        self.sql = sql
