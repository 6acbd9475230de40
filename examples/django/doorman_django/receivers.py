"""Signal receivers. Connected in DoormanConfig.ready()."""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from .client import report_failure, report_success

logger = logging.getLogger("doorman_django")


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
        report_success(request)
    except Exception:
        logger.exception("doorman: reporting a successful login")
