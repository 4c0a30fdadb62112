"""Every SQL statement of the Policy service, split by the data it touches."""
