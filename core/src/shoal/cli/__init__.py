"""The ``shoal`` command line: click groups mirroring docker's command tree.

``main.py`` builds the top-level group and adds the command groups (``plugin_cmd`` and the
others); ``errors`` turns known failures into one-line messages and exit status 2.
"""
