"""Test helpers shared by the suites: real Postgres, real servers, real sockets."""
