"""Metering: every request priced, spend counted per tenant and key, budgets watched."""
