# A package, so that its test modules (test_command, test_sqlite, ...) cannot clash by name with test
# modules of the same name in other folders of tests/; `from conftest import` still finds tests/conftest.py.
