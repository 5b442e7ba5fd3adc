"""Control: the auth authority. Users, orgs, sessions; mints short-lived sync tokens (ES256,
JWKS, rotation) and publishes revocations. Nothing else in the system signs sync tokens."""
