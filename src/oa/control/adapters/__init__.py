"""Control's SQL (schema `control`); the only code that reads or writes those tables."""
