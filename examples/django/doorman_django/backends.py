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
error), the attempt goes on to the next backend, and the problem is logged
(logger "doorman_django"): logins never depend on doorman being up.
"""

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from .client import check_attempt

logger = logging.getLogger("doorman_django")


class DoormanBackend:
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None  # no client to judge (authenticate() called without a request)
        if username is None:
            username = kwargs.get(getattr(get_user_model(), "USERNAME_FIELD", "username"))
        try:
            answer = check_attempt(request, username)
        except Exception:  # a bug here must not turn a login into a 500
            logger.exception("doorman: asking /v1/attempts")
            return None
        if answer is not None and answer.get("allow") is False:
            logger.info("doorman: login attempt refused before the password check: %s (retry after %ss)",
                        answer.get("reason"), answer.get("retry_after"))
            raise PermissionDenied("refused by doorman: %s" % answer.get("reason"))
        return None

    def get_user(self, user_id):
        return None
