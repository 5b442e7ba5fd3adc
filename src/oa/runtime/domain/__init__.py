"""Pure domain: no I/O, no database. Everything here is a function of its arguments."""
