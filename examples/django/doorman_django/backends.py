"""DoormanBackend: asks doorman before any password is checked.

AUTHENTICATION_BACKENDS = [
    "doorman_django.backends.DoormanBackend",   # first
    "django.contrib.auth.backends.ModelBackend",
]

It authenticates nobody. For each attempt it posts the client address, the
username and the device cookie's token to doorman's /v1/attempts, which
counts nothing. When doorman answers "allow": false (the account is locked
and the client has no valid device token, or the address is banned,
denylisted or outside the allowlist) it raises PermissionDenied: Django's
authenticate() stops there, sends user_login_failed (so the failure is still
reported) and the login form shows its usual error. The password is never
checked, so the answer cannot reveal whether it was right.

When doorman cannot answer (unreachable, slower than DOORMAN_TIMEOUT, an
error), the attempt goes on to the next backend (fail open), and the problem
is logged (logger "doorman_django", at most one warning a minute with a
count): logins do not depend on doorman being up. With DOORMAN_FAIL_CLOSED =
True such an attempt is refused instead, like a locked account.
"""

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from .client import ask_attempt, fail_closed, fail_open_log

logger = logging.getLogger("doorman_django")


class DoormanBackend:
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None  # no client to judge (authenticate() called without a request)
        if username is None:
            username = kwargs.get(getattr(get_user_model(), "USERNAME_FIELD", "username"))
        try:
            answer, unanswered = ask_attempt(request, username)
        except Exception:  # a bug here must not turn a login into a 500
            logger.exception("doorman: asking /v1/attempts")
            answer, unanswered = None, True
        if unanswered:
            if fail_closed():
                logger.warning("doorman: no answer from /v1/attempts; login refused (DOORMAN_FAIL_CLOSED)")
                raise PermissionDenied("doorman did not answer (DOORMAN_FAIL_CLOSED)")
            fail_open_log("doorman: no answer from /v1/attempts; login allowed to go on (fail open; "
                          "DOORMAN_FAIL_CLOSED = True refuses it)")
            return None
        if answer is not None and answer.get("allow") is False:
            logger.info("doorman: login attempt refused before the password check: %s (retry after %ss)",
                        answer.get("reason"), answer.get("retry_after"))
            raise PermissionDenied("refused by doorman: %s" % answer.get("reason"))
        return None

    def get_user(self, user_id):
        return None
