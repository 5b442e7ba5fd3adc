"""HTTP entry point of the runtime: `/internal/v1`, JSON in, the error envelope out."""
