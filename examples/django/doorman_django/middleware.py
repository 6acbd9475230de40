"""DoormanDeviceMiddleware: keeps doorman's device token in a cookie.

MIDDLEWARE += ["doorman_django.middleware.DoormanDeviceMiddleware"]

After a successful login, doorman's /v1/successes answer carries a device
token for the account (see receivers.on_logged_in). This middleware sets it
as DOORMAN_DEVICE_COOKIE (default "doorman_device"): HttpOnly, SameSite=Lax,
Secure when the request came over HTTPS, and Max-Age the token's remaining
life. The browser then sends it with its next logins; while the account is
locked against everyone else, a valid token for that account lets its
holder in.
"""

import datetime

from django.conf import settings

from .client import DEFAULT_DEVICE_COOKIE

# The request attribute on_logged_in leaves the issued token in.
ISSUED = "_doorman_device"


def parse_expires(value):
    """An RFC 3339 time as doorman writes it, as an aware datetime; None if bad."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


class DoormanDeviceMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        issued = getattr(request, ISSUED, None)
        if issued:
            token, expires = issued
            life = int((expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
            if life > 0:
                response.set_cookie(getattr(settings, "DOORMAN_DEVICE_COOKIE", DEFAULT_DEVICE_COOKIE), token,
                                    max_age=life, path="/", secure=request.is_secure(), httponly=True, samesite="Lax")
        return response
