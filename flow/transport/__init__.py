"""How calls reach flowd: a `Channel` (flow.transport.channel) that moves serialized messages.

Two transports, behind the one connection seam (flow.connection): grpcio (grpc_channel) for
everything, and HTTP/2 without grpcio (http2_unary) for the CLI's read-only unary calls, whose
start-up cannot afford importing grpcio. With flow.wire, these are the only modules that import
grpc or the generated messages (an import-linter contract in pyproject.toml keeps it so)."""
