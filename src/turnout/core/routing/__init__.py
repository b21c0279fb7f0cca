"""Which version answers: routing configs, the router, shadow statistics, outcomes, canaries."""
