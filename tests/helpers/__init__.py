"""Helpers shared by test modules and bench scripts: servers to start, pages to drive, waits.

Test modules import from here, never from one another (importing a test module elsewhere runs
it again under another name and mixes its names into the importer). pytest rewrites the asserts
here too (``tests/__init__.py`` registers the package).
"""
