#!/usr/bin/env python3
"""The demo project's manage.py."""
import os
import sys

if __name__ == "__main__":
    # doorman_django lives one directory up; an installed copy works as well.
    sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
