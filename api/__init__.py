"""Namespace for the application-support packages; the database framework lives in api.db."""
