"""Generated protobuf package (scripts/gen_protos.py). Never edit."""
