"""Generated protobuf/gRPC stubs for proto/postwire/v1 (scripts/gen-proto writes them; never edit)."""
