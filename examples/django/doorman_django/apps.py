from django.apps import AppConfig


class DoormanConfig(AppConfig):
    name = "doorman_django"
    verbose_name = "doorman"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from . import checks  # noqa: F401  (registers the system checks)
        from .receivers import on_login_failed, on_logged_in

        user_login_failed.connect(on_login_failed, dispatch_uid="doorman_django.failed")
        user_logged_in.connect(on_logged_in, dispatch_uid="doorman_django.logged_in")
