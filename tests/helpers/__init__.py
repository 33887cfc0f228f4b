"""Helpers shared by test modules and bench scripts: servers to start, pages to drive, waits.

Test modules import from here, never from one another (a test module imported elsewhere runs
its imports, and its fixtures and names leak). pytest rewrites the asserts in these modules too.
"""

import pytest

pytest.register_assert_rewrite(__name__)
