"""Interactive Brokers (ib_async): config, pure parsing of its objects, and the broker adapter."""
