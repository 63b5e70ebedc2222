"""Tests of the `runbooks` package."""
