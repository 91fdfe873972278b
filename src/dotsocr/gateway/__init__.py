"""The REST gateway: FastAPI app, durable job store, fair scheduler, metrics."""
