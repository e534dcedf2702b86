"""Tests of healer/supervising/."""
