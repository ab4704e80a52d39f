"""What the tests share: the development environment, polling, databases, topics, and the
per-service helpers, fakes and factories (imported as `tests.support.<module>`)."""
