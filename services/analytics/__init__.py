"""Analytics: every platform event into ClickHouse, and read-only SQL over it."""
