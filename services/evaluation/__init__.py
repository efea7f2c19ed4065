"""Evaluation: sampled production answers scored online, and drift watched per tenant."""
