"""Control's rules as pure functions: scopes, token claims and lifetimes, key schedules."""
