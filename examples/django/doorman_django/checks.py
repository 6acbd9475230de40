"""A system check so a bad setting stops `manage.py check`/`migrate`/`runserver`."""

from django.conf import settings
from django.core import checks

from .client import DEFAULT_TRUSTED_PROXIES, _as_tuple, parse_networks


@checks.register()
def check_settings(app_configs, **kwargs):
    errors = []
    try:
        parse_networks(_as_tuple(getattr(settings, "DOORMAN_TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES)))
    except ValueError as e:
        errors.append(checks.Error(str(e), id="doorman_django.E001"))
    try:
        t = float(getattr(settings, "DOORMAN_TIMEOUT", 0.5))
        if not t > 0:
            raise ValueError
    except (TypeError, ValueError):
        errors.append(checks.Error("DOORMAN_TIMEOUT: %r is not a positive number of seconds"
                                   % getattr(settings, "DOORMAN_TIMEOUT", None), id="doorman_django.E002"))
    url = getattr(settings, "DOORMAN_API_URL", "http://127.0.0.1:9181")
    if url and not url.startswith(("http://", "https://")):
        errors.append(checks.Error("DOORMAN_API_URL: %r is not an http(s) URL" % url, id="doorman_django.E003"))
    return errors
