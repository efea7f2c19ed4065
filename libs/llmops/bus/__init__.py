"""The NATS/JetStream layer: one topology, codecs, and the stage runner every consumer uses."""
