"""What every HTTP adapter shares: the error shape, JSON responses, keys, OpenAPI helpers, dependencies."""
