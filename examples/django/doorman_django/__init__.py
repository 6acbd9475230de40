"""doorman_django reports Django logins to doorman's webhook.

Add "doorman_django" to INSTALLED_APPS. Every failed login
(user_login_failed) is posted to DOORMAN_API_URL/v1/failures and every
successful one (user_logged_in) to DOORMAN_API_URL/v1/successes, so that
doorman can ban the client address at the proxy. Standard library only.

A slow or unreachable doorman never breaks the login page: each call is
bounded by DOORMAN_TIMEOUT, and every error is logged (logger
"doorman_django") and swallowed.
"""

from .client import client_ip, report_failure, report_success

__all__ = ["client_ip", "report_failure", "report_success"]
