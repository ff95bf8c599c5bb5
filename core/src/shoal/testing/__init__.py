"""Test support for plugin authors: a conformance suite per role (``shoal.testing.<role>``).

Subclass a suite in your plugin's tests and override its provider fixture; every test of the
suite then runs against your provider.
"""
