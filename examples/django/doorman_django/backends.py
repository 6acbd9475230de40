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

With DOORMAN_GATE_SAME_USER = True (doorman's gate in front of the login,
docs/gate.md), a login as anyone but the gate's user is refused before any
password is checked: the gate's user comes in X-Doorman-User, which the
proxy sets from doorman's answer on the gated location (nginx:
auth_request_set + proxy_set_header; a client's own header is replaced
there). A request without it is refused too.
"""

import logging
import unicodedata

from django.conf import settings
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
        if getattr(settings, "DOORMAN_GATE_SAME_USER", False):
            gate_user = request.META.get("HTTP_X_DOORMAN_USER", "")
            if not gate_user or gate_user != gate_name(username or ""):
                logger.info("doorman: login as %r refused: the gate's user is %r (DOORMAN_GATE_SAME_USER)",
                            username, gate_user)
                raise PermissionDenied("not the gate's user (DOORMAN_GATE_SAME_USER)")
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


def gate_name(username):
    """The username as doorman's gate names it: NFKC, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", username).casefold().strip()
