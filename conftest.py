"""Registers the Atlas pytest plugin (options, fixtures, hook-leak guard, pytest-html rows)."""

pytest_plugins = ["atlas_core.pytest_plugin"]
