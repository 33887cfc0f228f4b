import pytest

# Before anything imports them: failed asserts in the shared helpers explain themselves too.
pytest.register_assert_rewrite("tests.helpers")
