"""Tests of healer/diagnosis/."""
