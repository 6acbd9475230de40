"""Settings of the doorman demo: the Django admin on sqlite, reporting logins
to doorman. Configured from the environment so the same project runs in the
tests and in the docker-compose stack. Not a production configuration."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
env = os.environ.get

SECRET_KEY = env("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = env("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "doorman_django",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "doorman_django.middleware.DoormanDeviceMiddleware",
]

# doorman is asked before any password is checked: a locked account is
# refused for every client without a valid device cookie for it.
AUTHENTICATION_BACKENDS = [
    "doorman_django.backends.DoormanBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# DEMO_DOORMAN_APP=0: the admin as Django ships it, with no doorman app; the
# proxy's learned records protect it (docs/learn.md).
if env("DEMO_DOORMAN_APP", "1") == "0":
    INSTALLED_APPS.remove("doorman_django")
    MIDDLEWARE.remove("doorman_django.middleware.DoormanDeviceMiddleware")
    AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": env("DEMO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"

# doorman. nginx in front overwrites X-Real-IP with $remote_addr; only nginx's
# address may set it.
DOORMAN_API_URL = env("DOORMAN_API_URL", "http://127.0.0.1:9181")
DOORMAN_API_TOKEN = env("DOORMAN_API_TOKEN", "")
DOORMAN_TIMEOUT = float(env("DOORMAN_TIMEOUT", "0.5"))
DOORMAN_TRUSTED_PROXIES = env("DOORMAN_TRUSTED_PROXIES", "127.0.0.0/8,::1/128")
DOORMAN_CLIENT_IP_HEADER = env("DOORMAN_CLIENT_IP_HEADER", "X-Real-IP")
DOORMAN_CLIENT_IP_SOURCE = env("DOORMAN_CLIENT_IP_SOURCE", "header")
DOORMAN_FAIL_CLOSED = env("DOORMAN_FAIL_CLOSED", "") == "1"
DOORMAN_BLOCK_ON_BAN = env("DOORMAN_BLOCK_ON_BAN", "1") == "1"
DOORMAN_TRUST_UNIX_PEER = env("DOORMAN_TRUST_UNIX_PEER", "") == "1"
DOORMAN_DEVICE_COOKIE = env("DOORMAN_DEVICE_COOKIE", "doorman_device")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"doorman_django": {"handlers": ["stderr"], "level": "INFO"}},
}
