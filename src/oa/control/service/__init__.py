"""Control's use cases: accounts and sessions, the keyring, minting and revoking tokens."""
