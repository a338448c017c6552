"""Shared test set-up: import purejaxpo first so its XLA safety flag is in place."""

import purejaxpo  # noqa: F401
