"""Small runtime kit shared by every Hedgerow service: env config parsing, logging,
metrics endpoint, and the gRPC server lifecycle (health, reflection, graceful stop)."""
