"""Tests of fuzz/ and the property tests that share its oracle."""
