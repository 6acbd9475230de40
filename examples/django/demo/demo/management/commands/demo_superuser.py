"""Create (or reset) the demo superuser from DEMO_ADMIN_USER/DEMO_ADMIN_PASSWORD."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or reset the demo superuser (DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD; default admin/admin)."

    def handle(self, *args, **options):
        name = os.environ.get("DEMO_ADMIN_USER", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "admin")
        User = get_user_model()
        user, created = User.objects.get_or_create(username=name, defaults={"email": name + "@example.com"})
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write("%s superuser %s" % ("created" if created else "reset", name))
