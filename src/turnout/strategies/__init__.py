"""Built-in routing strategies, each a plugin registered like any third-party one."""
