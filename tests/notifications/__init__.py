"""Tests of the `notifications` package."""
