"""System checks: a bad setting stops `manage.py check`/`migrate`/`runserver`;
a missing or misplaced backend or middleware is a warning."""

from django.conf import settings
from django.core import checks

from .client import DEFAULT_TRUSTED_PROXIES, _as_tuple, client_ip_source, parse_networks


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
    try:
        client_ip_source()
    except ValueError as e:
        errors.append(checks.Error(str(e), id="doorman_django.E004"))
    url = getattr(settings, "DOORMAN_API_URL", "http://127.0.0.1:9181")
    if url and not url.startswith(("http://", "https://")):
        errors.append(checks.Error("DOORMAN_API_URL: %r is not an http(s) URL" % url, id="doorman_django.E003"))
    return errors


@checks.register()
def check_fail_mode(app_configs, **kwargs):
    closed = bool(getattr(settings, "DOORMAN_FAIL_CLOSED", False))
    if not getattr(settings, "DOORMAN_API_URL", "http://127.0.0.1:9181"):
        if closed:
            return [checks.Warning("DOORMAN_FAIL_CLOSED has no effect: DOORMAN_API_URL is empty, doorman is never asked",
                                   id="doorman_django.W003")]
        return []
    if closed:
        return [checks.Info("DOORMAN_FAIL_CLOSED: logins are refused while doorman cannot answer /v1/attempts",
                            id="doorman_django.I002")]
    return [checks.Info("fail open: logins go on while doorman cannot answer /v1/attempts (logged)",
                        hint="DOORMAN_FAIL_CLOSED = True refuses them instead.", id="doorman_django.I001")]


BACKEND = "doorman_django.backends.DoormanBackend"
MIDDLEWARE = "doorman_django.middleware.DoormanDeviceMiddleware"


@checks.register(checks.Tags.security)
def check_installation(app_configs, **kwargs):
    warnings = []
    backends = list(getattr(settings, "AUTHENTICATION_BACKENDS", ["django.contrib.auth.backends.ModelBackend"]))
    if BACKEND not in backends:
        warnings.append(checks.Warning(
            "%s is not in AUTHENTICATION_BACKENDS: locked accounts are not refused before the password check" % BACKEND,
            hint='AUTHENTICATION_BACKENDS = ["%s", "django.contrib.auth.backends.ModelBackend"]' % BACKEND,
            id="doorman_django.W001"))
    elif backends[0] != BACKEND:
        warnings.append(checks.Warning(
            "%s is not the first of AUTHENTICATION_BACKENDS: %s checks passwords before doorman is asked"
            % (BACKEND, backends[0]),
            hint="Move %s to the front of AUTHENTICATION_BACKENDS." % BACKEND,
            id="doorman_django.W001"))
    if MIDDLEWARE not in list(getattr(settings, "MIDDLEWARE", None) or []):
        warnings.append(checks.Warning(
            "%s is not in MIDDLEWARE: no device cookie is set, so a locked account locks out its own users too"
            % MIDDLEWARE,
            hint='MIDDLEWARE += ["%s"]' % MIDDLEWARE,
            id="doorman_django.W002"))
    return warnings
