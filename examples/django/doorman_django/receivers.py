"""Signal receivers. Connected in DoormanConfig.ready()."""

import logging
import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from .client import report_failure, report_success
from .middleware import ISSUED, parse_expires

logger = logging.getLogger("doorman_django")

# A device token as doorman issues it: unpadded base64url, 66 characters.
TOKEN = re.compile(r"\A[A-Za-z0-9_-]{66}\Z")


def _username(credentials):
    if not credentials:
        return None
    field = getattr(get_user_model(), "USERNAME_FIELD", "username")
    return credentials.get(field) or credentials.get("username")


def on_login_failed(sender, credentials=None, request=None, **kwargs):
    try:
        answer = report_failure(request, _username(credentials))
    except Exception:  # a bug here must not turn a login into a 500
        logger.exception("doorman: reporting a failed login")
        return
    if answer and answer.get("banned") is True and getattr(settings, "DOORMAN_BLOCK_ON_BAN", False):
        # authenticate() sends user_login_failed outside its own
        # PermissionDenied handling, so this reaches the view's caller and
        # Django answers 403 (handler403). Receivers connected after this
        # one do not run for this attempt.
        raise PermissionDenied("banned by doorman")


def on_logged_in(sender, request=None, user=None, **kwargs):
    try:
        name = user.get_username() if user is not None else None
        answer = report_success(request, name)
    except Exception:
        logger.exception("doorman: reporting a successful login")
        return
    if not answer or request is None:
        return
    token, expires = answer.get("device"), parse_expires(answer.get("device_expires"))
    if isinstance(token, str) and TOKEN.match(token) and expires is not None:
        setattr(request, ISSUED, (token, expires))  # DoormanDeviceMiddleware sets the cookie
