"""The remediator's errors. Each carries ``retriable`` as a class flag; causes are chained.

::

    RemediationError
    ├── NoFixError               the check has no mechanical fix for this object (not retriable)
    ├── UnsafeTargetError        the object cannot be fixed in place (bare Pod, ...) (not retriable)
    ├── ApplyError               the apiserver refused a write (retriable unless said otherwise)
    │   ├── FieldConflictError   another field manager owns a field we would change: escalate
    │   ├── StaleObjectError     uid/resourceVersion precondition failed: replan from the latest
    │   ├── ObjectGoneError      the object was deleted meanwhile (not retriable)
    │   └── RejectedError        invalid or forbidden (4xx): the same request fails again
    ├── VerificationError        the fix did not hold when re-read, or health regressed
    ├── RollbackError            the pre-image could not be restored (fields changed since)
    └── WouldWaitError           not a failure: the finding must wait (backoff, canary, pause);
                                 the service parks it and decides it again later (retriable)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class RemediationError(Exception):
    """Base of everything the remediator raises on purpose."""

    retriable = False


class NoFixError(RemediationError):
    """The check has no mechanical fix, or the fix does not apply to this object."""


class UnsafeTargetError(RemediationError):
    """The object cannot be fixed in place (for example a bare Pod without an owner)."""


class ApplyError(RemediationError):
    """The apiserver refused a write for a reason that a later attempt may not meet."""

    retriable = True

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class FieldConflictError(ApplyError):
    """Server-side apply found fields owned by other managers; we never force, we escalate."""

    retriable = False

    def __init__(self, message: str, *, managers: list[str], fields: list[str]) -> None:
        super().__init__(message, status=409)
        self.managers = managers
        self.fields = fields


class StaleObjectError(ApplyError):
    """The object changed since it was read: plan again from the latest state."""

    retriable = True


class ObjectGoneError(ApplyError):
    """The object no longer exists (or was recreated with another uid)."""

    retriable = False


class RejectedError(ApplyError):
    """The apiserver rejected the request as invalid or forbidden; repeating it cannot help."""

    retriable = False


class VerificationError(RemediationError):
    """Re-reading the object shows the fix did not take, or the rollout became unhealthy."""


class RollbackError(RemediationError):
    """The pre-image cannot be restored, because the fields changed after our write."""


class WouldWaitError(RemediationError):
    """The write cannot start yet; park the finding instead of holding a worker while it waits.

    Raised only when the caller asked for parking (``Remediator.handle(..., park=True)``).
    ``until`` completes when waiting may be over (a canary's outcome); ``retry_after_s`` is the
    wait otherwise, or the cap on the wait for ``until``; ``ready`` is a cheap in-memory check
    (is the pause over?) polled every ``retry_after_s`` before the finding is decided again,
    so a long pause does not turn every parked finding into reads of the apiserver.
    """

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        until: Awaitable[object] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.until = until
        self.ready = ready
