"""doorman_django reports Django logins to doorman and asks it first.

Add "doorman_django" to INSTALLED_APPS. Every failed login
(user_login_failed) is posted to DOORMAN_API_URL/v1/failures and every
successful one (user_logged_in) to DOORMAN_API_URL/v1/successes, so that
doorman can ban the client address at the proxy and lock the account.

With "doorman_django.backends.DoormanBackend" first in
AUTHENTICATION_BACKENDS, each attempt is checked with /v1/attempts before
any password is: a locked account is refused for everyone without a valid
device token. "doorman_django.middleware.DoormanDeviceMiddleware" keeps the
token doorman issues at a successful login in a cookie. Standard library
only.

A slow or unreachable doorman never breaks the login page: each call is
bounded by DOORMAN_TIMEOUT, and every error is logged (logger
"doorman_django") and swallowed.
"""

from .client import check_attempt, client_ip, report_failure, report_success

__all__ = ["check_attempt", "client_ip", "report_failure", "report_success"]
