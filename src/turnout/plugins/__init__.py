"""Built-in plugins other than routing strategies: breaker policies and health checks."""
