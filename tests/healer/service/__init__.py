"""Tests of healer/service/."""
