"""Tests of the `firebreak` package."""
