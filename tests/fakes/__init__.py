"""Fakes shared by the test suites: one of each, faked the same way everywhere."""
