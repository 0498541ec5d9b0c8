"""The nats backend: ingest nodes publish every batch to a NATS JetStream stream (`store.py`),
and `leitstand sink` writes the stream into the data directory (`sink.py` and the modules it
uses), through the embedded store's file protocol."""
