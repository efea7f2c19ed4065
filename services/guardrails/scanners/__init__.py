"""One module per scanner; `base` is the interface they share."""
