"""Tests of the `intake` package."""
