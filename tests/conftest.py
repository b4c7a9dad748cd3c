"""Shared fixtures live in tests/fixtures/; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.router",
    "tests.fixtures.kube",
    "tests.fixtures.kubectl",
    "tests.fixtures.reducer",
    "tests.fixtures.redis",
    "tests.fixtures.celery",
    "tests.fixtures.browser",
]
