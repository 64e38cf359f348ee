"""A minimal third-party KernelNotes plugin (installed by tests/test_plugin_distribution.py)."""
