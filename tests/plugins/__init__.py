"""Test-only plugins: one pose estimator, one annotation reader and one model, each a module of its
own that a registry line (made by ``tests/test_registries.py``) plugs in."""
