"""Tests of renderwatch/ (the commands)."""
