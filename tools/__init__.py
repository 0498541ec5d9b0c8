"""Helpers run from the repository root (`from tools.hauski_ingest import ingest_event`)."""
