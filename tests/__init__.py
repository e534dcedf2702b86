"""renderwatch's tests: laid out like the packages they test (tests/<package>/test_<module>.py)."""
