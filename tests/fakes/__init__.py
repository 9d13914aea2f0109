"""Test doubles of services Flow talks to and that the tests cannot reach: `fakes.mithril` is a
fake Mithril GPU cloud, checked against Mithril's OpenAPI spec, whose instances are real processes
reachable over the test stack's sshd. `fakes.fixtures` has the pytest fixtures for it."""
