"""Tests of healer/."""
