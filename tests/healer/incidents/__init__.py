"""Tests of healer/incidents/."""
