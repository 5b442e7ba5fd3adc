"""Control (the auth authority) and the Khala verifier, over real sockets and Postgres."""
